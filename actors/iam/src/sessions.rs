//! Login challenges and Kami sessions.
//!
//! A challenge lives 25 seconds. `iam.login` consumes it; the first signed request binds
//! it to the signer instead, after which it lives as long as a token and each request
//! must carry a nonce strictly greater than the last one accepted (the first is 0).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cmesh_common::rpc::{NONCE_ERROR, SESSION_ERROR, SIGNATURE_ERROR};
use cmesh_common::{Address, CmtpError, Status};

pub type SessionId = [u8; 32];

const LOG_IN_AGAIN: &str = "ask for a new challenge with iam.challenge and log in again";

struct Pending {
    address: Address,
    message: String,
    expires: Instant,
}

struct Bound {
    address: Address,
    last_nonce: u64,
    expires: Instant,
    expires_at: u64,
}

pub struct Sessions {
    pending: HashMap<SessionId, Pending>,
    bound: HashMap<SessionId, Bound>,
    challenge_ttl: Duration,
    session_ttl: Duration,
    cap: usize,
}

/// What a login may use: the address the challenge was for and the text that was signed.
#[derive(Debug)]
pub struct LoginChallenge {
    pub address: Address,
    pub message: String,
}

/// What a signed request must be checked against before its signature is trusted.
pub enum SignedSessionState {
    /// Unanswered challenge: the request must be signed by `address` with nonce 0.
    Pending { address: Address },
    /// Bound session: signed by `address`, nonce above `last_nonce`.
    Bound { address: Address, last_nonce: u64 },
}

fn session_error(message: &str) -> CmtpError {
    CmtpError::new(Status::UNAUTHORIZED, format!("{message}: {LOG_IN_AGAIN}")).with_rpc_code(SESSION_ERROR)
}

impl Sessions {
    pub fn new(challenge_ttl: Duration, session_ttl: Duration, cap: usize) -> Self {
        Sessions {
            pending: HashMap::new(),
            bound: HashMap::new(),
            challenge_ttl,
            session_ttl,
            cap,
        }
    }

    /// Stores a new challenge. Fails with 503 when too many are outstanding.
    pub fn open(&mut self, id: SessionId, address: Address, message: String, now: Instant) -> Result<(), CmtpError> {
        if self.pending.len() + self.bound.len() >= self.cap {
            self.purge(now);
            if self.pending.len() + self.bound.len() >= self.cap {
                return Err(CmtpError::unavailable(
                    "too many open login sessions; try again shortly",
                ));
            }
        }
        self.pending.insert(
            id,
            Pending {
                address,
                message,
                expires: now + self.challenge_ttl,
            },
        );
        Ok(())
    }

    /// Takes a challenge for `iam.login`: it cannot be used again afterwards.
    pub fn take_for_login(&mut self, id: &SessionId, now: Instant) -> Result<LoginChallenge, CmtpError> {
        match self.pending.remove(id) {
            Some(p) if p.expires > now => Ok(LoginChallenge {
                address: p.address,
                message: p.message,
            }),
            Some(_) => Err(session_error("the challenge has expired (25 seconds)")),
            None => Err(session_error("unknown or already used session")),
        }
    }

    /// Looks a session up for a signed request, before its signature is checked.
    pub fn state(&self, id: &SessionId, now: Instant) -> Result<SignedSessionState, CmtpError> {
        if let Some(b) = self.bound.get(id) {
            if b.expires > now {
                return Ok(SignedSessionState::Bound {
                    address: b.address,
                    last_nonce: b.last_nonce,
                });
            }
            return Err(session_error("the session has expired"));
        }
        match self.pending.get(id) {
            Some(p) if p.expires > now => Ok(SignedSessionState::Pending { address: p.address }),
            Some(_) => Err(session_error("the challenge has expired (25 seconds)")),
            None => Err(session_error("unknown session")),
        }
    }

    /// Accepts a signed request by `signer` with `nonce`, after its signature verified.
    /// Checked again here because other requests may have advanced the session meanwhile.
    /// Returns the session's address and expiry (unix seconds).
    pub fn accept(
        &mut self,
        id: &SessionId,
        signer: Address,
        nonce: u64,
        now: Instant,
        now_unix: u64,
    ) -> Result<(Address, u64), CmtpError> {
        match self.state(id, now)? {
            SignedSessionState::Pending { address } => {
                check_signer(address, signer)?;
                if nonce != 0 {
                    return Err(nonce_error(format!(
                        "the first request of a session has nonce 0, not {nonce}"
                    )));
                }
                self.pending.remove(id);
                let expires_at = now_unix + self.session_ttl.as_secs();
                self.bound.insert(
                    *id,
                    Bound {
                        address,
                        last_nonce: 0,
                        expires: now + self.session_ttl,
                        expires_at,
                    },
                );
                Ok((address, expires_at))
            }
            SignedSessionState::Bound { address, last_nonce } => {
                check_signer(address, signer)?;
                if nonce <= last_nonce {
                    return Err(nonce_error(format!(
                        "nonce {nonce} is not greater than the last accepted ({last_nonce}); replay refused"
                    )));
                }
                let bound = self.bound.get_mut(id).ok_or_else(|| session_error("unknown session"))?;
                bound.last_nonce = nonce;
                Ok((address, bound.expires_at))
            }
        }
    }

    /// Drops expired challenges and sessions.
    pub fn purge(&mut self, now: Instant) {
        self.pending.retain(|_, p| p.expires > now);
        self.bound.retain(|_, b| b.expires > now);
    }
}

fn check_signer(expected: Address, signer: Address) -> Result<(), CmtpError> {
    if expected == signer {
        Ok(())
    } else {
        Err(CmtpError::new(
            Status::UNAUTHORIZED,
            format!("signature is by {signer}, but the session belongs to {expected}; {LOG_IN_AGAIN}"),
        )
        .with_rpc_code(SIGNATURE_ERROR))
    }
}

fn nonce_error(message: String) -> CmtpError {
    CmtpError::new(Status::UNAUTHORIZED, message).with_rpc_code(NONCE_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(byte: u8) -> Address {
        Address([byte; 20])
    }

    fn sessions() -> Sessions {
        Sessions::new(Duration::from_secs(25), Duration::from_secs(3600), 10)
    }

    #[test]
    fn login_consumes_the_challenge() {
        let mut s = sessions();
        let now = Instant::now();
        s.open([1; 32], address(1), "m".into(), now).expect("open");
        assert_eq!(s.take_for_login(&[1; 32], now).expect("first").address, address(1));
        let again = s.take_for_login(&[1; 32], now).expect_err("second use refused");
        assert_eq!(again.rpc_code, Some(SESSION_ERROR));
    }

    #[test]
    fn challenges_expire_after_their_ttl() {
        let mut s = sessions();
        let now = Instant::now();
        s.open([1; 32], address(1), "m".into(), now).expect("open");
        let later = now + Duration::from_secs(26);
        assert!(s.take_for_login(&[1; 32], later).is_err());
    }

    #[test]
    fn signed_requests_bind_then_need_increasing_nonces() {
        let mut s = sessions();
        let now = Instant::now();
        s.open([2; 32], address(2), "m".into(), now).expect("open");
        let wrong_first = s
            .accept(&[2; 32], address(2), 1, now, 0)
            .expect_err("first nonce must be 0");
        assert_eq!(wrong_first.rpc_code, Some(NONCE_ERROR));
        let other = s.accept(&[2; 32], address(3), 0, now, 0).expect_err("other signer");
        assert_eq!(other.rpc_code, Some(SIGNATURE_ERROR));
        assert!(s.accept(&[2; 32], address(2), 0, now, 0).is_ok());
        let replay = s.accept(&[2; 32], address(2), 0, now, 0).expect_err("replay");
        assert_eq!(replay.rpc_code, Some(NONCE_ERROR));
        assert!(s.accept(&[2; 32], address(2), 5, now, 0).is_ok());
        assert!(s.accept(&[2; 32], address(2), 4, now, 0).is_err());
        // A bound session can no longer be used to log in.
        assert!(s.take_for_login(&[2; 32], now).is_err());
        // It lives as long as a token, well past the challenge's 25 seconds.
        assert!(s
            .accept(&[2; 32], address(2), 6, now + Duration::from_secs(600), 0)
            .is_ok());
    }

    #[test]
    fn the_cap_refuses_new_challenges() {
        let mut s = Sessions::new(Duration::from_secs(25), Duration::from_secs(3600), 1);
        let now = Instant::now();
        s.open([1; 32], address(1), "m".into(), now).expect("open");
        let full = s.open([2; 32], address(1), "m".into(), now).expect_err("full");
        assert_eq!(full.status, Status::UNAVAILABLE);
        // Once the first expires there is room again.
        assert!(s
            .open([2; 32], address(1), "m".into(), now + Duration::from_secs(30))
            .is_ok());
    }
}
