//! `pg_ark info`: what a repository holds, from the repository alone:
//! clusters, chains and backups (kinds, sizes, times), archived WAL per
//! timeline with its gaps, and logical dumps. `--json` prints the stable
//! document of `pg_ark_core::restore::inventory` (see docs/reference/json.md).
use crate::repo_opts::RepoOpts;
use crate::Failure;
use pg_ark_core::restore::inventory::inventory;
use pg_ark_core::restore::plan::human_bytes;
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    repo: RepoOpts,
    /// Print the JSON document instead of text
    #[arg(long)]
    json: bool,
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn bytes(v: &Value) -> String {
    human_bytes(v.as_u64().unwrap_or(0))
}

pub fn run(args: &Args) -> Result<(), Failure> {
    let repo = args.repo.open()?;
    let mut doc = inventory(&repo)?;
    // Read through --first-versions or --as-of: the whole repository's
    // versions, for what was put over pg_ark's objects, hid or planted
    // (named on stderr at exit, and in the JSON document).
    let mut tampering = Vec::new();
    for view in crate::repo_opts::views() {
        tampering.extend(
            view.scan("")
                .map_err(pg_ark_core::Error::from)?
                .into_iter()
                .map(|t| t.to_string()),
        );
    }
    if !tampering.is_empty() {
        doc["tampering"] = serde_json::json!(tampering);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).map_err(|e| Failure::Message(e.to_string()))?
        );
        return Ok(());
    }
    println!("repository {}", s(&doc["repository"]));
    let clusters = doc["clusters"].as_array().cloned().unwrap_or_default();
    if clusters.is_empty() {
        println!("  no cluster has archived or backed up into it yet");
    }
    for c in clusters {
        println!(
            "cluster {} (PostgreSQL {}, WAL segments of {} MiB)",
            s(&c["system_identifier"]),
            c["pg_major"],
            c["wal_segment_size"].as_u64().unwrap_or(0) >> 20
        );
        let chains = c["chains"].as_array().cloned().unwrap_or_default();
        if chains.is_empty() {
            println!("  no physical backup");
        }
        for b in c["newer_backups"].as_array().cloned().unwrap_or_default() {
            println!(
                "  backup {}: not listed, a newer pg_ark wrote it ({})",
                s(&b["backup_id"]),
                s(&b["error"])
            );
        }
        for ch in chains {
            let list = ch["backups"].as_array().cloned().unwrap_or_default();
            println!(
                "  chain {}: {} backup(s), {} stored",
                s(&ch["full"]),
                list.len(),
                bytes(&ch["stored_bytes"])
            );
            for b in list {
                println!(
                    "    {:<12} {}  timeline {}, LSN {} to {}, finished {}, {} original, {} stored{}",
                    s(&b["kind"]),
                    s(&b["backup_id"]),
                    b["timeline"],
                    s(&b["start_lsn"]),
                    s(&b["stop_lsn"]),
                    s(&b["finished_at"]),
                    bytes(&b["original_bytes"]),
                    bytes(&b["stored_bytes"]),
                    b["parent"]
                        .as_str()
                        .map(|p| format!(", on {p}"))
                        .unwrap_or_default()
                );
                let l = &b["lock"];
                if l.is_object() {
                    println!(
                        "                 Object Lock ({}) until {}",
                        s(&l["mode"]),
                        s(&l["retain_until"])
                    );
                }
                let d = &b["drill"];
                if d.is_object() {
                    if d["ok"] == Value::Bool(true) {
                        println!(
                            "                 restore drill passed {} (job {}): RTO {} s (rebuild {} s, recovery {} s)",
                            s(&d["at"]),
                            d["job_id"],
                            d["rto_seconds"],
                            d["timings"]["rebuild_seconds"],
                            d["timings"]["recovery_seconds"]
                        );
                    } else if d["ok"].is_null() {
                        println!(
                            "                 restore drill record not read (encrypted: give --identity-file)"
                        );
                    } else {
                        println!(
                            "                 restore drill FAILED {} (job {}): {}",
                            s(&d["at"]),
                            d["job_id"],
                            s(&d["error"])
                        );
                    }
                }
            }
        }
        for t in c["wal"]["timelines"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let from = t["history"]
                .as_array()
                .and_then(|h| h.last())
                .map(|h| {
                    format!(
                        " (branched from timeline {} at {})",
                        h["timeline"],
                        s(&h["switched_at"])
                    )
                })
                .unwrap_or_default();
            println!(
                "  WAL on timeline {}{from}: {} segment(s)",
                t["timeline"], t["segments"]
            );
            for r in t["ranges"].as_array().cloned().unwrap_or_default() {
                println!("    {} to {}", s(&r["first"]), s(&r["last"]));
            }
            for g in t["gaps"].as_array().cloned().unwrap_or_default() {
                println!(
                    "    gap: {} to {} missing ({} segment(s))",
                    s(&g["first"]),
                    s(&g["last"]),
                    g["segments"]
                );
            }
        }
        let dumps = c["logical"].as_array().cloned().unwrap_or_default();
        if !dumps.is_empty() {
            println!("  logical dumps:");
        }
        for d in dumps {
            println!(
                "    {}  {}  {}, {}, finished {}",
                s(&d["database"]),
                s(&d["label"]),
                s(&d["format"]),
                bytes(&d["bytes"]),
                s(&d["finished_at"])
            );
        }
    }
    Ok(())
}
