"""moto's S3 server, answering two requests the way AWS does.

`python3 moto_server.py -H 127.0.0.1 -p PORT` runs `moto_server` (moto
5.2.1, which `make setup` installs) with one change. moto 5.2 names the root
element of two answers after the operation (`GetBucketVersioningResponse`,
`CompleteMultipartUploadResponse`), where AWS uses `VersioningConfiguration`
and `CompleteMultipartUploadResult`. boto3 ignores the root; aws-sdk-s3,
which pg_ark uses, refuses such an answer. So without this, every multipart
upload and every versioning query fails against moto. Nothing else changes.
"""
import sys

from moto.core import serialize

AWS_ROOTS = {
    "GetBucketVersioning": "VersioningConfiguration",
    "CompleteMultipartUpload": "CompleteMultipartUploadResult",
}
# Where the XML body gets its root, below S3's and REST's own handling.
moto_answer = serialize.BaseXMLSerializer._serialized_result_to_response


def aws_answer(self, resp, result, shape, serialized_result):
    root = None
    if isinstance(self, serialize.S3Serializer):
        root = AWS_ROOTS.get(self.operation_model.name)
    if root is None:
        return moto_answer(self, resp, result, shape, serialized_result)
    self._serialize_namespace_attribute(serialized_result)
    resp["body"] = self._serialize_body({root: serialized_result})
    resp["headers"]["Content-Type"] = self.CONTENT_TYPE
    return resp


serialize.BaseXMLSerializer._serialized_result_to_response = aws_answer

from moto.server import main  # noqa: E402  (after the change)

main(sys.argv[1:])
