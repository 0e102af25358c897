//! Decoding a call's input (JSON text) into a method's declared parameters.
//!
//! The input may be:
//!
//! | input | meaning |
//! |---|---|
//! | empty, or `null` | no arguments |
//! | `["Dexter", 3]` | positional: the first parameter, the second, … (fewer is fine) |
//! | `{"name": "Dexter"}` | by name, any order; unknown names are refused |
//! | `"Dexter"` (any non-array, non-object) | the only parameter of a one-parameter method |
//!
//! A parameter that is not given is an error (`missing argument`), unless its type is an
//! `Option`, which then is `None`. Explicit `null` is decoded like any other value.
//! A one-parameter method whose parameter is itself an array or object takes it wrapped:
//! `[[1, 2]]` or `{"items": [1, 2]}`.

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::Value;

use crate::Error;

/// The arguments of one call, consumed parameter by parameter with [`Args::next_arg`].
#[derive(Debug)]
pub struct Args {
    method: &'static str,
    params: &'static [&'static str],
    values: Vec<Option<Value>>,
    next: usize,
}

impl Args {
    /// Splits `input` over `params` (the method's parameter names, in order).
    pub fn parse(method: &'static str, params: &'static [&'static str], input: &[u8]) -> Result<Args, Error> {
        let fail = |msg: String| Error::new(format!("{method}: {msg}"));
        let text = input.trim_ascii();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(text).map_err(|e| fail(format!("args are not valid JSON: {e}")))?
        };
        let mut values = vec![None; params.len()];
        match value {
            Value::Null => {}
            Value::Array(items) => {
                if items.len() > params.len() {
                    let n = items.len();
                    let s = if n == 1 { "" } else { "s" };
                    return Err(fail(format!("got {n} argument{s}, but {}", takes(params))));
                }
                for (slot, item) in values.iter_mut().zip(items) {
                    *slot = Some(item);
                }
            }
            Value::Object(map) => {
                for (name, item) in map {
                    let Some(i) = params.iter().position(|p| *p == name) else {
                        return Err(fail(format!("unknown argument `{name}` ({})", takes(params))));
                    };
                    values[i] = Some(item);
                }
            }
            single if params.len() == 1 => values[0] = Some(single),
            _ => return Err(fail(format!("args must be a JSON array or object ({})", takes(params)))),
        }
        Ok(Args {
            method,
            params,
            values,
            next: 0,
        })
    }

    /// Decodes the next parameter.
    pub fn next_arg<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        let i = self.next;
        self.next += 1;
        let (method, name) = (self.method, self.params.get(i).copied().unwrap_or("?"));
        match self.values.get_mut(i).and_then(Option::take) {
            Some(value) => {
                T::deserialize(value).map_err(|e| Error::new(format!("{method}: invalid argument `{name}`: {e}")))
            }
            None => T::deserialize(Missing).map_err(|_| Error::new(format!("{method}: missing argument `{name}`"))),
        }
    }
}

fn takes(params: &[&str]) -> String {
    match params {
        [] => "takes no arguments".into(),
        _ => format!("takes {}: {}", params.len(), params.join(", ")),
    }
}

/// An absent argument: only an `Option` (or a type deserialized like one) accepts it.
struct Missing;

impl<'de> Deserializer<'de> for Missing {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("missing"))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_none()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const P: &[&str] = &["name", "count", "tag"];

    /// Decodes `input` as (String, u32, Option<String>).
    fn decode(input: &str) -> Result<(String, u32, Option<String>), String> {
        let mut a = Args::parse("greet", P, input.as_bytes()).map_err(|e| e.to_string())?;
        let r = (|| Ok::<_, Error>((a.next_arg()?, a.next_arg()?, a.next_arg()?)))();
        r.map_err(|e| e.to_string())
    }

    #[test]
    fn positional_and_named_forms_agree() {
        let want = Ok(("Dexter".to_string(), 3, None));
        assert_eq!(decode(r#"["Dexter", 3]"#), want);
        assert_eq!(decode(r#"["Dexter", 3, null]"#), want);
        assert_eq!(decode(r#"{"count": 3, "name": "Dexter"}"#), want);
        assert_eq!(decode(r#" {"name":"Dexter","count":3,"tag":null} "#), want);
        assert_eq!(decode(r#"["a", 1, "x"]"#), Ok(("a".into(), 1, Some("x".into()))));
    }

    #[test]
    fn clear_errors() {
        assert_eq!(decode(r#"["Dexter"]"#).unwrap_err(), "greet: missing argument `count`");
        assert_eq!(decode("").unwrap_err(), "greet: missing argument `name`");
        assert_eq!(decode("null").unwrap_err(), "greet: missing argument `name`");
        assert_eq!(
            decode(r#"[5, 3]"#).unwrap_err(),
            "greet: invalid argument `name`: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            decode(r#"{"name": "a", "count": -1}"#).unwrap_err(),
            "greet: invalid argument `count`: invalid value: integer `-1`, expected u32"
        );
        assert_eq!(
            decode(r#"{"name": "a", "cuont": 1}"#).unwrap_err(),
            "greet: unknown argument `cuont` (takes 3: name, count, tag)"
        );
        assert_eq!(
            decode(r#"["a", 1, "x", 4]"#).unwrap_err(),
            "greet: got 4 arguments, but takes 3: name, count, tag"
        );
        assert_eq!(
            decode(r#""Dexter""#).unwrap_err(),
            "greet: args must be a JSON array or object (takes 3: name, count, tag)"
        );
        assert!(decode(r#"["Dexter""#)
            .unwrap_err()
            .starts_with("greet: args are not valid JSON: "));
    }

    #[test]
    fn single_parameter_takes_a_bare_value() {
        let one = |input: &str| -> Result<String, String> {
            let mut a = Args::parse("hello", &["name"], input.as_bytes()).map_err(|e| e.to_string())?;
            a.next_arg().map_err(|e| e.to_string())
        };
        assert_eq!(one(r#""Dexter""#), Ok("Dexter".into()));
        assert_eq!(one(r#"["Dexter"]"#), Ok("Dexter".into()));
        assert_eq!(one(r#"{"name":"Dexter"}"#), Ok("Dexter".into()));
        assert_eq!(
            one("7").unwrap_err(),
            "hello: invalid argument `name`: invalid type: integer `7`, expected a string"
        );
    }

    #[test]
    fn no_parameters() {
        for input in ["", "  ", "null", "[]", "{}"] {
            assert!(Args::parse("count", &[], input.as_bytes()).is_ok(), "{input:?}");
        }
        assert_eq!(
            Args::parse("count", &[], b"[1]").unwrap_err().to_string(),
            "count: got 1 argument, but takes no arguments"
        );
        assert_eq!(
            Args::parse("count", &[], b"1").unwrap_err().to_string(),
            "count: args must be a JSON array or object (takes no arguments)"
        );
    }

    #[test]
    fn only_options_may_be_missing() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Cfg {
            #[serde(default)]
            x: u8,
        }
        let mut a = Args::parse("m", &["v", "o", "c", "u"], b"[]").unwrap();
        assert!(a.next_arg::<Value>().is_err()); // a JSON value must be given (null is a value)
        assert_eq!(a.next_arg::<Option<Value>>().unwrap(), None);
        assert!(a.next_arg::<Cfg>().is_err());
        assert!(a.next_arg::<Vec<u8>>().is_err());

        let mut a = Args::parse("m", &["v", "c"], br#"[null, {}]"#).unwrap();
        assert_eq!(a.next_arg::<Value>().unwrap(), Value::Null);
        assert_eq!(a.next_arg::<Cfg>().unwrap(), Cfg { x: 0 });
    }
}
