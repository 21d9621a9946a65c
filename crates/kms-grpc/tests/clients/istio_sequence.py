"""Drives hsm-plugin with gRPC's C core (Python grpcio) and its DEFAULT :authority.

Usage: istio_sequence.py TARGET PROTO_DIR STUB_DIR KEK_ID

TARGET is a gRPC target such as unix:///abs/path.sock; the channel is created without any
authority override, so the C core sends the percent-encoded socket path, as istiod's
neighbours built on it do. Stubs are generated from our .proto files into STUB_DIR with
grpcio-tools. Runs grpc.health.v1 Check, the istiod sequence of the Istio v1 service
(GenerateDEK, GenerateSKey, LoadSKey, AuthenticatedEncrypt, AuthenticatedDecrypt) under
KEK_ID, then Kubernetes KMS v2 Status/Encrypt/Decrypt, and prints one JSON line per call.
Any failure prints the gRPC code and details and exits 1.
"""

import importlib
import json
import os
import sys


def generate(proto_dir, stub_dir):
    from grpc_tools import protoc

    os.makedirs(stub_dir, exist_ok=True)
    protos = ["istio_v1.proto", "k8s_v2.proto", "health.proto"]
    args = ["protoc", f"-I{proto_dir}", f"--python_out={stub_dir}", f"--grpc_python_out={stub_dir}"]
    if protoc.main(args + [os.path.join(proto_dir, p) for p in protos]) != 0:
        raise SystemExit("grpc_tools.protoc failed")
    sys.path.insert(0, stub_dir)
    return {p[:-6]: (importlib.import_module(p[:-6] + "_pb2"), importlib.import_module(p[:-6] + "_pb2_grpc")) for p in protos}


def report(call, **fields):
    print(json.dumps({"call": call, **fields}), flush=True)


def main():
    target, proto_dir, stub_dir, kek = sys.argv[1:5]
    kek = kek.encode()
    mods = generate(proto_dir, stub_dir)
    import grpc

    istio_pb2, istio_grpc = mods["istio_v1"]
    v2_pb2, v2_grpc = mods["k8s_v2"]
    health_pb2, health_grpc = mods["health"]
    with grpc.insecure_channel(target) as channel:
        try:
            health = health_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            report("Check", status=health.status)

            istio = istio_grpc.KeyManagementServiceStub(channel)
            dek = istio.GenerateDEK(istio_pb2.GenerateDEKRequest(kek_kid=kek), timeout=10).encrypted_dek_blob
            report("GenerateDEK", bytes=len(dek))
            skey = istio.GenerateSKey(
                istio_pb2.GenerateSKeyRequest(size=2048, kind=istio_pb2.RSA, kek_kid=kek, encrypted_dek_blob=dek),
                timeout=60,
            ).encrypted_skey_blob
            report("GenerateSKey", bytes=len(skey))
            pem = istio.LoadSKey(
                istio_pb2.LoadSKeyRequest(kek_kid=kek, encrypted_dek_blob=dek, encrypted_skey_blob=skey), timeout=10
            ).plaintext_skey
            report("LoadSKey", rsa_pem=pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----"))
            csr = b"-----BEGIN CERTIFICATE REQUEST-----\npython\n-----END CERTIFICATE REQUEST-----\n"
            ct = istio.AuthenticatedEncrypt(
                istio_pb2.AuthenticatedEncryptRequest(kek_kid=kek, encrypted_dek_blob=dek, plaintext=csr, aad=b"csr-py"),
                timeout=10,
            ).ciphertext
            report("AuthenticatedEncrypt", bytes=len(ct))
            pt = istio.AuthenticatedDecrypt(
                istio_pb2.AuthenticatedDecryptRequest(kek_kid=kek, encrypted_dek_blob=dek, ciphertext=ct, aad=b"csr-py"),
                timeout=10,
            ).plaintext
            report("AuthenticatedDecrypt", round_trip=pt == csr)

            v2 = v2_grpc.KeyManagementServiceStub(channel)
            status = v2.Status(v2_pb2.StatusRequest(), timeout=10)
            report("Status", version=status.version, healthz=status.healthz, key_id=status.key_id)
            enc = v2.Encrypt(v2_pb2.EncryptRequest(plaintext=b"apiserver-dek", uid="py-1"), timeout=10)
            dec = v2.Decrypt(
                v2_pb2.DecryptRequest(ciphertext=enc.ciphertext, uid="py-2", key_id=enc.key_id, annotations=enc.annotations),
                timeout=10,
            )
            report("Encrypt+Decrypt", round_trip=dec.plaintext == b"apiserver-dek", key_id=enc.key_id)
        except grpc.RpcError as err:
            report("error", code=str(err.code()), details=err.details())
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
