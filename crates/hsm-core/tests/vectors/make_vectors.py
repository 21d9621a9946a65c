#!/usr/bin/env python3
"""Writes envelope.json: Thales-format JWE test vectors made with Python `cryptography`.

An implementation independent of hsm-core's (OpenSSL in software, PKCS#11 in the HSM) builds
the compact JWE of KMS-PROTOCOL section 4.1 and the DEK JWK of section 4.2 from fixed keys and
IVs, so the Rust tests can check both directions: these blobs decrypt with hsm-core, and
hsm-core's output with the same IV is byte-identical to these blobs.

Run: python3 make_vectors.py > envelope.json   (needs `cryptography`)
Check mode: python3 make_vectors.py --check envelope.json  (decrypts every blob in the file)
"""
import base64
import hashlib
import json
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def header(kid: str, aad: bytes) -> str:
    # Field order and compact separators as Go's encoding/json writes the plugin's struct.
    parts = ['"alg":"dir"', '"kid":' + json.dumps(kid)]
    if aad:
        parts.append('"_thales_aad":' + json.dumps(b64u(aad)))
    parts.append('"enc":"A256GCM"')
    return b64u(("{" + ",".join(parts) + "}").encode())


def seal(key: bytes, kid: str, aad: bytes, iv: bytes, plaintext: bytes) -> str:
    protected = header(kid, aad)
    out = AESGCM(key).encrypt(iv, plaintext, protected.encode())
    ct, tag = out[:-16], out[-16:]
    return ".".join([protected, "", b64u(iv), b64u(ct), b64u(tag)])


def open_(key: bytes, blob: str) -> tuple[bytes, bytes]:
    protected, empty, iv, ct, tag = blob.split(".")
    assert empty == ""
    hdr = json.loads(unb64u(protected))
    aad = unb64u(hdr.get("_thales_aad", ""))
    pt = AESGCM(key).decrypt(unb64u(iv), unb64u(ct) + unb64u(tag), protected.encode())
    return pt, aad


def jwk(dek: bytes) -> tuple[str, str]:
    k = b64u(dek)
    kid = hashlib.sha256(("v1.jwk.oct." + k).encode()).hexdigest()
    text = (
        '{"key_ops":["encrypt","decrypt","sign","verify"],"alg":"A256GCM",'
        '"kid":"' + kid + '","k":"' + k + '","kty":"oct"}'
    )
    return text, kid


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        v = json.load(open(sys.argv[2]))
        kek, dek = bytes.fromhex(v["kek_hex"]), bytes.fromhex(v["dek_hex"])
        for name in ("encrypted_dek_iv12", "encrypted_dek_iv16"):
            pt, _ = open_(kek, v[name])
            assert pt.decode() == v["dek_jwk"], name
        for blob in v.get("ours", []):
            pt, aad = open_(kek if json.loads(unb64u(blob.split(".")[0]))["kid"] == v["kek_id"] else dek, blob)
            print("decrypted", len(pt), "bytes, aad", aad)
        print("ok")
        return
    kek = bytes(range(32))
    dek = bytes((7 * i + 3) % 256 for i in range(32))
    kek_id = "vector-kek-1"
    dek_jwk, dek_kid = jwk(dek)
    iv12 = bytes.fromhex("00112233445566778899aabb")
    iv16 = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
    csr = b"-----BEGIN CERTIFICATE REQUEST-----\nMIIBvector\n-----END CERTIFICATE REQUEST-----\n"
    csr_id = b"csr-0001"
    skey = b"-----BEGIN RSA PRIVATE KEY-----\nvector\n-----END RSA PRIVATE KEY-----\n"
    div = bytes.fromhex("0a0b0c0d0e0f101112131415")
    out = {
        "generator": "python cryptography AESGCM",
        "kek_id": kek_id,
        "kek_hex": kek.hex(),
        "dek_hex": dek.hex(),
        "dek_jwk": dek_jwk,
        "dek_kid": dek_kid,
        "iv12_hex": iv12.hex(),
        "iv16_hex": iv16.hex(),
        "encrypted_dek_iv12": seal(kek, kek_id, b"", iv12, dek_jwk.encode()),
        "encrypted_dek_iv16": seal(kek, kek_id, b"", iv16, dek_jwk.encode()),
        "csr": csr.decode(),
        "csr_id": csr_id.decode(),
        "dek_iv_hex": div.hex(),
        "encrypted_csr": seal(dek, dek_kid, csr_id, div, csr),
        "skey_pem": skey.decode(),
        "encrypted_skey": seal(dek, dek_kid, b"", div, skey),
    }
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
