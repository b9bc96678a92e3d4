"""Wire formats shared by the server and the load generator: the V2 gRPC messages
(``inference_pb2``, generated from ``inference.proto``) and HTTP/2 framing (``http2``).
Imports nothing else of mserve."""

#: The gRPC service name of the Open Inference Protocol V2, as clients call it.
V2_SERVICE = "inference.GRPCInferenceService"
