//! RFC 8785 (JCS) canonical JSON: the bytes a Kami-signed JSON-RPC request is signed over,
//! so that clients in any language produce the same bytes for the same request.

use serde_json::Value;

/// Canonical JSON of `value` (sorted keys, no whitespace, ECMAScript number form).
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, serde_json::Error> {
    serde_jcs::to_vec(value)
}

/// The bytes a signed JSON object is signed over: the JCS of the object without its
/// `signature` member (Kami requests, node announcements, forwarded calls).
pub fn signing_bytes(value: &Value) -> Vec<u8> {
    let mut unsigned = value.clone();
    if let Some(object) = unsigned.as_object_mut() {
        object.remove("signature");
    }
    // A serde_json::Value always serialises.
    canonical_json(&unsigned).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_and_whitespace_dropped() {
        let value: Value =
            serde_json::from_str(r#"{ "b": [1, 2.50, "é"], "a": {"z": null, "y": true} }"#).expect("json");
        let canonical = canonical_json(&value).expect("jcs");
        assert_eq!(
            String::from_utf8(canonical).expect("utf8"),
            r#"{"a":{"y":true,"z":null},"b":[1,2.5,"é"]}"#
        );
    }

    #[test]
    fn signing_bytes_leave_out_the_signature() {
        let signed = serde_json::json!({"b": 1, "signature": "0x00", "a": 2});
        assert_eq!(signing_bytes(&signed), br#"{"a":2,"b":1}"#.to_vec());
    }

    #[test]
    fn rfc8785_number_forms() {
        let value: Value = serde_json::from_str("[1e30, 4.50, 0.000001, 1e-7, -0.0]").expect("json");
        let canonical = String::from_utf8(canonical_json(&value).expect("jcs")).expect("utf8");
        assert_eq!(canonical, "[1e+30,4.5,0.000001,1e-7,0]");
    }
}
