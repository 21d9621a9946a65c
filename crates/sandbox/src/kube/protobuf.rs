//! Decoding of the protobuf request bodies kubectl 1.32 sends (`create namespace`, `create
//! configmap`, `create secret`, `create token`, `create serviceaccount`) into JSON objects.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// The 4-byte magic in front of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\0";

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0_u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".to_owned())
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (number, wire) = (tag >> 3, tag & 7);
        let field = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 | 5 => {
                pos += if wire == 1 { 8 } else { 4 };
                if pos > buf.len() {
                    return Err("truncated fixed-width field".to_owned());
                }
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length overflow")?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            other => return Err(format!("unsupported wire type {other}")),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn string(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "string field is not UTF-8".to_owned())
}

/// Inserts a non-empty string field.
fn put_str(m: &mut Map<String, Value>, key: &str, bytes: &[u8]) -> Result<(), String> {
    let s = string(bytes)?;
    if !s.is_empty() {
        m.insert(key.to_owned(), Value::String(s));
    }
    Ok(())
}

/// A map entry (`1 key, 2 value`); bytes values are base64-encoded when `binary`.
fn map_entry(bytes: &[u8], binary: bool) -> Result<(String, Value), String> {
    let mut key = String::new();
    let mut value = json!("");
    for (n, f) in fields(bytes)? {
        if let Field::Bytes(b) = f {
            match n {
                1 => key = string(b)?,
                2 if binary => value = json!(STANDARD.encode(b)),
                2 => value = json!(string(b)?),
                _ => {}
            }
        }
    }
    Ok((key, value))
}

fn object_meta(bytes: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    let mut finalizers = Vec::new();
    for (n, f) in fields(bytes)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => put_str(&mut m, "name", b)?,
            2 => put_str(&mut m, "generateName", b)?,
            3 => put_str(&mut m, "namespace", b)?,
            11 => {
                let (k, v) = map_entry(b, false)?;
                labels.insert(k, v);
            }
            12 => {
                let (k, v) = map_entry(b, false)?;
                annotations.insert(k, v);
            }
            14 => finalizers.push(Value::String(string(b)?)),
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".to_owned(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".to_owned(), Value::Object(annotations));
    }
    if !finalizers.is_empty() {
        m.insert("finalizers".to_owned(), Value::Array(finalizers));
    }
    Ok(Value::Object(m))
}

fn namespace(bytes: &[u8]) -> Result<Value, String> {
    let mut obj = Map::new();
    for (n, f) in fields(bytes)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => {
                obj.insert("metadata".to_owned(), object_meta(b)?);
            }
            2 => {
                let mut fin = Vec::new();
                for (n2, f2) in fields(b)? {
                    if let (1, Field::Bytes(s)) = (n2, f2) {
                        fin.push(Value::String(string(s)?));
                    }
                }
                if !fin.is_empty() {
                    obj.insert("spec".to_owned(), json!({"finalizers": fin}));
                }
            }
            _ => {}
        }
    }
    Ok(Value::Object(obj))
}

fn config_map_or_secret(bytes: &[u8], secret: bool) -> Result<Value, String> {
    let mut obj = Map::new();
    let mut data = Map::new();
    let mut binary = Map::new();
    let mut string_data = Map::new();
    for (n, f) in fields(bytes)? {
        match (n, f, secret) {
            (1, Field::Bytes(b), _) => {
                obj.insert("metadata".to_owned(), object_meta(b)?);
            }
            (2, Field::Bytes(b), _) => {
                let (k, v) = map_entry(b, secret)?;
                data.insert(k, v);
            }
            (3, Field::Bytes(b), false) => {
                let (k, v) = map_entry(b, true)?;
                binary.insert(k, v);
            }
            (3, Field::Bytes(b), true) => put_str(&mut obj, "type", b)?,
            (4, Field::Bytes(b), true) => {
                let (k, v) = map_entry(b, false)?;
                string_data.insert(k, v);
            }
            (4, Field::Varint(v), false) | (5, Field::Varint(v), true) => {
                obj.insert("immutable".to_owned(), json!(v != 0));
            }
            _ => {}
        }
    }
    if !data.is_empty() {
        obj.insert("data".to_owned(), Value::Object(data));
    }
    if !binary.is_empty() {
        obj.insert("binaryData".to_owned(), Value::Object(binary));
    }
    if !string_data.is_empty() {
        obj.insert("stringData".to_owned(), Value::Object(string_data));
    }
    Ok(Value::Object(obj))
}

fn token_request(bytes: &[u8]) -> Result<Value, String> {
    let mut obj = Map::new();
    for (n, f) in fields(bytes)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => {
                obj.insert("metadata".to_owned(), object_meta(b)?);
            }
            2 => {
                let mut spec = Map::new();
                let mut audiences = Vec::new();
                for (n2, f2) in fields(b)? {
                    match (n2, f2) {
                        (1, Field::Bytes(s)) => audiences.push(Value::String(string(s)?)),
                        (3, Field::Bytes(r)) => {
                            let mut reference = Map::new();
                            for (n3, f3) in fields(r)? {
                                if let Field::Bytes(s) = f3 {
                                    match n3 {
                                        1 => put_str(&mut reference, "kind", s)?,
                                        2 => put_str(&mut reference, "apiVersion", s)?,
                                        3 => put_str(&mut reference, "name", s)?,
                                        4 => put_str(&mut reference, "uid", s)?,
                                        _ => {}
                                    }
                                }
                            }
                            if !reference.is_empty() {
                                spec.insert("boundObjectRef".to_owned(), Value::Object(reference));
                            }
                        }
                        (4, Field::Varint(v)) if v != 0 => {
                            spec.insert("expirationSeconds".to_owned(), json!(v.cast_signed()));
                        }
                        _ => {}
                    }
                }
                if !audiences.is_empty() {
                    spec.insert("audiences".to_owned(), Value::Array(audiences));
                }
                obj.insert("spec".to_owned(), Value::Object(spec));
            }
            _ => {}
        }
    }
    Ok(Value::Object(obj))
}

fn service_account(bytes: &[u8]) -> Result<Value, String> {
    let mut obj = Map::new();
    let mut pull = Vec::new();
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                obj.insert("metadata".to_owned(), object_meta(b)?);
            }
            (3, Field::Bytes(b)) => {
                let mut r = Map::new();
                for (n2, f2) in fields(b)? {
                    if let (1, Field::Bytes(s)) = (n2, f2) {
                        put_str(&mut r, "name", s)?;
                    }
                }
                pull.push(Value::Object(r));
            }
            (4, Field::Varint(v)) => {
                obj.insert("automountServiceAccountToken".to_owned(), json!(v != 0));
            }
            _ => {}
        }
    }
    if !pull.is_empty() {
        obj.insert("imagePullSecrets".to_owned(), Value::Array(pull));
    }
    Ok(Value::Object(obj))
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into the JSON form of the object.
/// The error is a message for a 415/400 answer.
pub(crate) fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("protobuf body lacks the k8s magic prefix")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(rest)? {
        let Field::Bytes(b) = f else { continue };
        match n {
            1 => {
                for (n2, f2) in fields(b)? {
                    if let Field::Bytes(s) = f2 {
                        match n2 {
                            1 => api_version = string(s)?,
                            2 => kind = string(s)?,
                            _ => {}
                        }
                    }
                }
            }
            2 => raw = b,
            _ => {}
        }
    }
    let mut obj = match kind.as_str() {
        "Namespace" => namespace(raw)?,
        "ConfigMap" => config_map_or_secret(raw, false)?,
        "Secret" => config_map_or_secret(raw, true)?,
        "TokenRequest" => token_request(raw)?,
        "ServiceAccount" => service_account(raw)?,
        other => {
            return Err(format!(
                "protobuf decoding of kind {other:?} is not supported; send JSON"
            ));
        }
    };
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_captured_create_configmap_body() {
        let hex = "6b3873000a0f0a0276311209436f6e6669674d617012210a170a0263311200\
                   1a057661756c7422002a003200380042001206\
                   0a016b1201761a002200";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let obj = decode(&bytes).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "namespace": "vault"}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn rejects_bodies_without_magic_and_truncated_fields() {
        assert!(decode(b"{}").is_err());
        assert!(decode(b"k8s\0\x0a\x7f").is_err());
    }
}
