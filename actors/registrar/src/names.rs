//! What a registrable name and a target look like.
//!
//! Names are keys that people type and that other nodes must agree on byte for byte, so
//! there is exactly one spelling of each: input is case-insensitive (ASCII only) and is
//! normalised to lower case before anything else looks at it. Rejections say what is
//! wrong *and* what is allowed, because the caller usually typed the name by hand.

use std::fmt;

/// The TLDs a mesh serves when the configuration names none.
pub const DEFAULT_TLDS: &[&str] = &["mcom"];

/// Longest label, as in DNS.
pub const MAX_LABEL_LEN: usize = 63;

/// Longest name input we look at. Two labels of at most 63 characters and a dot fit
/// comfortably; anything longer is rejected without echoing it back.
pub const MAX_NAME_INPUT: usize = 2 * MAX_LABEL_LEN + 1;

/// Longest target (an FQMN string), in bytes.
pub const MAX_TARGET_BYTES: usize = 1024;

/// The example used in messages.
const EXAMPLE: &str = "hello";

/// Why a name was refused. Every message states the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty: a name is `label.tld`, e.g. `{EXAMPLE}.{tld}`", tld = .first_tld)]
    Empty { first_tld: String },

    #[error("name is {len} bytes long: a name is `label.tld`, at most {MAX_NAME_INPUT} characters")]
    TooLong { len: usize },

    #[error(
        "`{name}` has no tld: a name is `label.tld`, e.g. `{EXAMPLE}.{tld}`",
        tld = .first_tld
    )]
    NoTld { name: String, first_tld: String },

    #[error(
        "`{name}` has {labels} labels: a name is exactly two labels, `label.tld`, \
         e.g. `{EXAMPLE}.{tld}`",
        tld = .first_tld
    )]
    TooManyLabels {
        name: String,
        labels: usize,
        first_tld: String,
    },

    #[error(
        "`{name}` has an empty label: a name is `label.tld`, \
         each part 1 to {MAX_LABEL_LEN} characters"
    )]
    EmptyLabel { name: String },

    #[error("label `{label}` is {len} characters long: a label is 1 to {MAX_LABEL_LEN} characters")]
    LabelTooLong { label: String, len: usize },

    #[error(
        "label `{label}` contains {ch}: a label may contain only letters a-z (any case), \
         digits 0-9 and hyphens"
    )]
    BadCharacter { label: String, ch: Shown },

    #[error(
        "label `{label}` {position} with a hyphen: \
         a label must start and end with a letter or digit"
    )]
    HyphenAtEdge { label: String, position: Edge },

    #[error("unknown tld `{tld}`: this mesh serves {served}")]
    UnknownTld { tld: String, served: Served },
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target is empty: a target is an FQMN such as `I:whoami`, at most {MAX_TARGET_BYTES} bytes")]
    Empty,

    #[error("target is {len} bytes long: a target is at most {MAX_TARGET_BYTES} bytes")]
    TooLong { len: usize },
}

/// Which end of a label a hyphen was found at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    Start,
    End,
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Edge::Start => "starts",
            Edge::End => "ends",
        })
    }
}

/// A character as shown in a message: printable ones in backticks, others as escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown(pub char);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ch = self.0;
        if ch == ' ' {
            f.write_str("a space")
        } else if ch.is_control() || ch.is_whitespace() {
            write!(f, "the character {}", ch.escape_unicode())
        } else {
            write!(f, "`{ch}`")
        }
    }
}

/// The served TLDs, shown as `.a, .b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served(pub Vec<String>);

impl fmt::Display for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, tld) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, ".{tld}")?;
        }
        Ok(())
    }
}

/// Why a TLD list from the configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TldConfigError {
    #[error("no tlds configured: the registrar needs at least one, e.g. [\"mcom\"]")]
    Empty,
    #[error("configured tld `{tld}` is not a valid label: {reason}")]
    Invalid { tld: String, reason: String },
}

/// The naming rules of one mesh: which TLDs it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePolicy {
    tlds: Vec<String>,
}

impl Default for NamePolicy {
    fn default() -> Self {
        NamePolicy {
            tlds: DEFAULT_TLDS.iter().map(|tld| (*tld).to_owned()).collect(),
        }
    }
}

impl NamePolicy {
    /// Rules serving `tlds` (case-insensitive, a leading dot is allowed, duplicates are
    /// dropped). An empty list or a TLD that is not a valid label is a configuration error.
    pub fn new<I, S>(tlds: I) -> Result<Self, TldConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out: Vec<String> = Vec::new();
        for tld in tlds {
            let raw = tld.as_ref();
            let tld = raw.strip_prefix('.').unwrap_or(raw).to_ascii_lowercase();
            let invalid = |reason: String| TldConfigError::Invalid {
                tld: shown(raw),
                reason,
            };
            if tld.is_empty() {
                return Err(invalid("it is empty".to_owned()));
            }
            check_label(&tld).map_err(|reason| invalid(reason.to_string()))?;
            if !out.contains(&tld) {
                out.push(tld);
            }
        }
        if out.is_empty() {
            return Err(TldConfigError::Empty);
        }
        Ok(NamePolicy { tlds: out })
    }

    /// The served TLDs, lower case, in configuration order.
    pub fn tlds(&self) -> &[String] {
        &self.tlds
    }

    fn first_tld(&self) -> String {
        self.tlds.first().cloned().unwrap_or_else(|| DEFAULT_TLDS[0].to_owned())
    }

    /// The one spelling of `input`: lower case, exactly `label.tld` with a served TLD.
    pub fn normalize(&self, input: &str) -> Result<String, NameError> {
        if input.is_empty() {
            return Err(NameError::Empty {
                first_tld: self.first_tld(),
            });
        }
        if input.len() > MAX_NAME_INPUT {
            return Err(NameError::TooLong { len: input.len() });
        }
        let name = input.to_ascii_lowercase();
        let labels: Vec<&str> = name.split('.').collect();
        let (label, tld) = match labels.as_slice() {
            [_] => {
                return Err(NameError::NoTld {
                    name: shown(&name),
                    first_tld: self.first_tld(),
                })
            }
            [label, tld] => (*label, *tld),
            _ => {
                return Err(NameError::TooManyLabels {
                    name: shown(&name),
                    labels: labels.len(),
                    first_tld: self.first_tld(),
                })
            }
        };
        if label.is_empty() || tld.is_empty() {
            return Err(NameError::EmptyLabel { name: shown(&name) });
        }
        check_label(label)?;
        if !self.tlds.iter().any(|served| served == tld) {
            return Err(NameError::UnknownTld {
                tld: shown(tld),
                served: Served(self.tlds.clone()),
            });
        }
        Ok(name)
    }
}

/// Checks a target's shape only; that it is a valid FQMN is the router's business.
pub fn check_target(target: &str) -> Result<(), TargetError> {
    if target.is_empty() {
        return Err(TargetError::Empty);
    }
    if target.len() > MAX_TARGET_BYTES {
        return Err(TargetError::TooLong { len: target.len() });
    }
    Ok(())
}

/// One non-empty label: at most 63 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
/// Expects lower case input (upper-case letters have been folded by then).
fn check_label(label: &str) -> Result<(), NameError> {
    if let Some(ch) = label
        .chars()
        .find(|ch| !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || *ch == '-'))
    {
        return Err(NameError::BadCharacter {
            label: shown(label),
            ch: Shown(ch),
        });
    }
    let len = label.len();
    if len > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong {
            label: shown(label),
            len,
        });
    }
    if label.starts_with('-') {
        return Err(NameError::HyphenAtEdge {
            label: label.to_owned(),
            position: Edge::Start,
        });
    }
    if label.ends_with('-') {
        return Err(NameError::HyphenAtEdge {
            label: label.to_owned(),
            position: Edge::End,
        });
    }
    Ok(())
}

/// Input echoed in a message, with control characters escaped so a message stays on one
/// readable line. Input length is bounded by [`MAX_NAME_INPUT`] before this is called.
fn shown(text: &str) -> String {
    text.chars()
        .flat_map(|ch| {
            let escaped: Vec<char> = if ch.is_control() {
                ch.escape_default().collect()
            } else {
                vec![ch]
            };
            escaped
        })
        .collect()
}
