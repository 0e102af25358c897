//! The IAM actor: owns challenges, sessions, the token cache and the peer table, and
//! reads callers' mesh-wide attributes from the registry. Signature maths goes to the
//! `Verifier` pool; the actor only keeps the books.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use cmesh_common::hash::{from_hex0x, to_hex0x};
use cmesh_common::jwt::{self, Claims, JwtError};
use cmesh_common::rpc::SIGNATURE_ERROR;
use cmesh_common::time::{unix_millis, unix_seconds};
use cmesh_common::{Address, CmtpError, SigningKey, Status};

use crate::attributes::MeshAttributes;
use crate::config::IamConfig;
use crate::error::IamError;
use crate::messages::*;
use crate::peers::{Announcement, PeerTable};
use cmesh_common::method::{Method, Permission, ADMIN_ATTRIBUTE};

use crate::permissions::Permissions;
use crate::sessions::{SessionId, Sessions};
use crate::verifier::{RecoverRequestSigner, RecoverSigner, Verifier, VerifyToken};

const LOG_IN: &str =
    "log in with iam.challenge and iam.login, then send `Authorization: Bearer <token>` (or sign the request)";
/// Bytes of the issuing node's address at the start of a session id.
const SESSION_TAG_LEN: usize = 6;
/// Announcements older than this are stale and ignored (replays of old ones included).
const ANNOUNCEMENT_MAX_AGE_MS: u64 = 3_600_000;

pub struct IamActor {
    key: SigningKey,
    config: IamConfig,
    permissions: Permissions,
    sessions: Sessions,
    tokens: HashMap<String, Claims>,
    /// Mesh-wide attributes, as the registry holds them.
    attributes: Arc<dyn MeshAttributes>,
    peers: PeerTable,
    /// The nodes the mesh registry admits (`None` until it first says).
    admitted: Option<std::collections::BTreeSet<Address>>,
    /// The latest ignored announcement of each non-admitted node, replayed if it is
    /// admitted later (its next announcement may be half a minute away).
    ignored: HashMap<Address, Announcement>,
    verifier: Addr<Verifier>,
    /// Random per process start, sent in announcements.
    boot: String,
}

/// Non-admitted nodes whose ignored announcements are kept.
const MAX_IGNORED: usize = 1024;

impl IamActor {
    /// `attributes`: where mesh-wide attributes are read; `verifier`: the signature pool.
    pub fn new(
        key: SigningKey,
        config: IamConfig,
        attributes: Arc<dyn MeshAttributes>,
        verifier: Addr<Verifier>,
    ) -> Result<Self, IamError> {
        let permissions = Permissions::new(&config.permissions)?;
        let sessions = Sessions::new(config.challenge_ttl, config.token_ttl, config.max_sessions);
        let peers = PeerTable::new(&key);
        let mut boot = [0u8; 8];
        getrandom::fill(&mut boot).map_err(IamError::Entropy)?;
        let boot = to_hex0x(&boot);
        Ok(IamActor {
            boot,
            key,
            config,
            permissions,
            sessions,
            tokens: HashMap::new(),
            attributes,
            peers,
            admitted: None,
            ignored: HashMap::new(),
            verifier,
        })
    }

    /// Mesh-wide attributes, and `role=admin` for this node's own admins.
    fn attributes_of(&self, address: &Address) -> Vec<String> {
        let mut attributes = self.attributes.attributes(address);
        if self.config.admins.contains(address) && !attributes.iter().any(|a| a == ADMIN_ATTRIBUTE) {
            attributes.push(ADMIN_ATTRIBUTE.into());
            attributes.sort();
        }
        attributes
    }

    fn caller(&self, address: Address, expires_at: u64, method: Option<Method>) -> Result<Caller, CmtpError> {
        let attributes = self.attributes_of(&address);
        let caller = Caller {
            address: Some(address),
            attributes,
            expires_at: Some(expires_at),
            signed: None,
        };
        self.authorize(&caller, method)?;
        Ok(caller)
    }

    fn authorize(&self, caller: &Caller, method: Option<Method>) -> Result<(), CmtpError> {
        match (self.permissions.required(method), caller.address) {
            (Permission::Public, _) => Ok(()),
            (_, None) => Err(CmtpError::unauthorized(format!(
                "{} needs credentials: {LOG_IN}",
                named(method)
            ))),
            (Permission::Authenticated, Some(_)) => Ok(()),
            (Permission::Attribute(needed), Some(address)) => {
                if caller.attributes.contains(&needed) {
                    Ok(())
                } else {
                    Err(CmtpError::forbidden(format!(
                        "{} needs the attribute {needed}, which {address} does not hold",
                        named(method)
                    )))
                }
            }
        }
    }

    fn cache_token(&mut self, token: String, claims: Claims) {
        if self.tokens.len() >= self.config.token_cache {
            let now = unix_seconds();
            self.tokens.retain(|_, c| c.exp > now);
            if self.tokens.len() >= self.config.token_cache {
                self.tokens.clear();
            }
        }
        self.tokens.insert(token, claims);
    }

    /// Why a token does not count. One issued by an admitted node whose announcement
    /// this node has not heard yet (it started moments ago) is a 503 to retry, not a 401.
    fn token_refused(&self, error: JwtError) -> CmtpError {
        match error {
            JwtError::UnknownIssuer(issuer)
                if issuer != self.key.address()
                    && self
                        .admitted
                        .as_ref()
                        .is_some_and(|admitted| admitted.contains(&issuer)) =>
            {
                CmtpError::unavailable(format!(
                    "the token's issuer {issuer} is a node of this mesh whose announcement this node has not \
                     heard yet (one of the two started moments ago); retry in a few seconds"
                ))
            }
            other => token_error(other),
        }
    }

    fn peer_allowed(&self, address: &Address) -> bool {
        (self.config.allowed_peers.is_empty() || self.config.allowed_peers.contains(address))
            && self.admitted.as_ref().is_none_or(|admitted| admitted.contains(address))
    }
}

impl Actor for IamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(5), |actor, _| {
            actor.sessions.purge(Instant::now());
            let now = unix_seconds();
            actor.tokens.retain(|_, c| c.exp > now);
        });
    }
}

/// How a message names the method: `` `iam.grant` ``, or "this method" for one the node
/// does not serve (the caller hears that once admitted).
fn named(method: Option<Method>) -> String {
    method.map_or_else(|| "this method".to_string(), |m| format!("`{m}`"))
}

fn parse_session(text: &str) -> Result<SessionId, CmtpError> {
    from_hex0x::<32>(text).ok_or_else(|| {
        CmtpError::new(
            Status::UNAUTHORIZED,
            format!("session must be 32 bytes of 0x-hex; {LOG_IN}"),
        )
        .with_rpc_code(cmesh_common::rpc::SESSION_ERROR)
    })
}

fn token_error(error: JwtError) -> CmtpError {
    CmtpError::unauthorized(format!("{error}; {LOG_IN}"))
}

fn signature_error(error: impl std::fmt::Display) -> CmtpError {
    CmtpError::new(Status::UNAUTHORIZED, format!("bad signature: {error}; {LOG_IN}")).with_rpc_code(SIGNATURE_ERROR)
}

fn verifier_gone(error: MailboxError) -> CmtpError {
    CmtpError::unavailable(format!("signature checks are unavailable: {error}"))
}

impl Handler<Admit> for IamActor {
    type Result = ResponseActFuture<Self, Result<Caller, CmtpError>>;

    fn handle(&mut self, msg: Admit, _: &mut Context<Self>) -> Self::Result {
        let method = msg.method;
        if self.permissions.required(method) == Permission::Public {
            // Credentials are not needed, and stale ones must not stop a client logging in again.
            return Box::pin(fut::ready(Ok(Caller::anonymous())));
        }
        match msg.credentials {
            Credentials::None => Box::pin(fut::ready(Err(CmtpError::unauthorized(format!(
                "{} needs credentials: {LOG_IN}",
                named(method)
            ))))),
            Credentials::Bearer(token) => {
                let now = unix_seconds();
                if let Some(claims) = self.tokens.get(&token) {
                    if claims.exp > now {
                        let (sub, exp) = (claims.sub, claims.exp);
                        return Box::pin(fut::ready(self.caller(sub, exp, method)));
                    }
                    self.tokens.remove(&token);
                    return Box::pin(fut::ready(Err(token_error(JwtError::Expired))));
                }
                let request = VerifyToken {
                    token: token.clone(),
                    audience: self.config.mesh.clone(),
                    now,
                    keys: self.peers.keys(),
                };
                Box::pin(
                    self.verifier
                        .send(request)
                        .into_actor(self)
                        .map(move |result, actor, _| {
                            let claims = result.map_err(verifier_gone)?.map_err(|e| actor.token_refused(e))?;
                            let (sub, exp) = (claims.sub, claims.exp);
                            actor.cache_token(token, claims);
                            actor.caller(sub, exp, method)
                        }),
                )
            }
            Credentials::Signed(signed) => {
                let session = match parse_session(&signed.session) {
                    Ok(session) => session,
                    Err(e) => return Box::pin(fut::ready(Err(e))),
                };
                // Cheap checks first, so floods of stale requests cost no signature recovery.
                if let Err(e) = self.sessions.state(&session, Instant::now()) {
                    return Box::pin(fut::ready(Err(e)));
                }
                let nonce = signed.nonce;
                let request = RecoverRequestSigner {
                    raw: signed.raw,
                    signature: signed.signature,
                };
                Box::pin(
                    self.verifier
                        .send(request)
                        .into_actor(self)
                        .map(move |result, actor, _| {
                            let signed = result.map_err(verifier_gone)?.map_err(signature_error)?;
                            let (address, expires_at) = actor.sessions.accept(
                                &session,
                                signed.signer,
                                nonce,
                                Instant::now(),
                                unix_seconds(),
                            )?;
                            let mut caller = actor.caller(address, expires_at, method)?;
                            caller.signed = Some(signed.proof);
                            Ok(caller)
                        }),
                )
            }
        }
    }
}

impl Handler<Authorize> for IamActor {
    type Result = Result<(), CmtpError>;

    fn handle(&mut self, msg: Authorize, _: &mut Context<Self>) -> Self::Result {
        self.authorize(&msg.caller, Some(msg.method))
    }
}

impl Handler<SessionIssuer> for IamActor {
    type Result = Option<Address>;

    fn handle(&mut self, msg: SessionIssuer, _: &mut Context<Self>) -> Self::Result {
        let session = from_hex0x::<32>(&msg.session)?;
        let tag = &session[..SESSION_TAG_LEN];
        if tag == &self.key.address().0[..SESSION_TAG_LEN] {
            return None;
        }
        self.peers
            .list()
            .into_iter()
            .map(|p| p.address)
            .find(|a| &a.0[..SESSION_TAG_LEN] == tag)
    }
}

impl Handler<Challenge> for IamActor {
    type Result = Result<ChallengeReply, CmtpError>;

    fn handle(&mut self, msg: Challenge, _: &mut Context<Self>) -> Self::Result {
        let mut session = [0u8; 32];
        // The node's half starts with a tag of its address, so whichever node a client's
        // next request reaches can hand it to the node that holds the session.
        session[..SESSION_TAG_LEN].copy_from_slice(&self.key.address().0[..SESSION_TAG_LEN]);
        getrandom::fill(&mut session[SESSION_TAG_LEN..16])
            .map_err(|e| CmtpError::internal(format!("no entropy: {e}")))?;
        match msg.client_nonce {
            Some(text) => {
                let client = from_hex0x::<16>(&text)
                    .ok_or_else(|| CmtpError::bad_request("client_nonce must be 16 bytes of 0x-hex"))?;
                session[16..].copy_from_slice(&client);
            }
            None => getrandom::fill(&mut session[16..]).map_err(|e| CmtpError::internal(format!("no entropy: {e}")))?,
        }
        let expires_at = unix_seconds() + self.config.challenge_ttl.as_secs();
        let expiry = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(expires_at));
        let session_hex = to_hex0x(&session);
        let message = format!(
            "Log in to the cmesh mesh `{name}` ({mesh})\n\nAddress: {address}\nSession: {session_hex}\nNode: {node}\nExpires: {expiry}\n\nSigning this proves you hold the key of this address. It costs nothing and grants nothing else.",
            name = self.config.mesh_name,
            mesh = self.config.mesh,
            address = msg.address.to_eip55(),
            node = self.key.address(),
        );
        self.sessions
            .open(session, msg.address, message.clone(), Instant::now())?;
        Ok(ChallengeReply {
            session: session_hex,
            message,
            expires_at,
        })
    }
}

impl Handler<Login> for IamActor {
    type Result = ResponseActFuture<Self, Result<LoginReply, CmtpError>>;

    fn handle(&mut self, msg: Login, _: &mut Context<Self>) -> Self::Result {
        let challenge = match parse_session(&msg.session).and_then(|s| self.sessions.take_for_login(&s, Instant::now()))
        {
            Ok(challenge) => challenge,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let request = RecoverSigner {
            message: challenge.message.into_bytes(),
            signature: msg.signature,
        };
        let address = challenge.address;
        Box::pin(
            self.verifier
                .send(request)
                .into_actor(self)
                .map(move |result, actor, _| {
                    let (_, signer) = result.map_err(verifier_gone)?.map_err(signature_error)?;
                    if signer != address {
                        return Err(signature_error(format!(
                            "signed by {signer}, but the challenge was for {address}"
                        )));
                    }
                    let iat = unix_seconds();
                    let exp = iat + actor.config.token_ttl.as_secs();
                    let mut jti = [0u8; 16];
                    getrandom::fill(&mut jti).map_err(|e| CmtpError::internal(format!("no entropy: {e}")))?;
                    let claims = Claims {
                        iss: actor.key.address(),
                        sub: address,
                        aud: actor.config.mesh.clone(),
                        iat,
                        exp,
                        jti: to_hex0x(&jti),
                    };
                    let token = jwt::issue(&actor.key, &claims);
                    actor.cache_token(token.clone(), claims);
                    Ok(LoginReply {
                        token,
                        address,
                        expires_at: exp,
                    })
                }),
        )
    }
}

impl Handler<PeerAnnounced> for IamActor {
    type Result = ResponseActFuture<Self, Result<Option<Address>, CmtpError>>;

    fn handle(&mut self, msg: PeerAnnounced, _: &mut Context<Self>) -> Self::Result {
        let announcement = msg.0;
        let stale = unix_millis().saturating_sub(announcement.ts) > ANNOUNCEMENT_MAX_AGE_MS;
        if announcement.mesh != self.config.mesh || stale {
            return Box::pin(fut::ready(Ok(None)));
        }
        if !self.peer_allowed(&announcement.address) {
            // Kept (the latest per address, for a bounded number of addresses) so that it
            // counts at once if the node is admitted later; logged once per address, so a
            // flood of made-up keys floods neither memory nor the log.
            let address = announcement.address;
            if (self.ignored.contains_key(&address) || self.ignored.len() < MAX_IGNORED)
                && self.ignored.insert(address, announcement).is_none()
            {
                tracing::warn!(node = %address, "ignored the announcement of a node that is not admitted to this mesh");
            }
            return Box::pin(fut::ready(Ok(None)));
        }
        let request = RecoverSigner {
            message: announcement.signing_bytes(),
            signature: announcement.signature.clone(),
        };
        Box::pin(
            self.verifier
                .send(request)
                .into_actor(self)
                .map(move |result, actor, _| {
                    let (public, signer) = result.map_err(verifier_gone)?.map_err(signature_error)?;
                    if signer != announcement.address {
                        return Err(signature_error("announcement not signed by the node it names"));
                    }
                    let is_new = actor.peers.learn(&announcement, public);
                    if is_new {
                        tracing::info!(peer = %announcement.address, "learnt a node (new or restarted)");
                    }
                    Ok(is_new.then_some(announcement.address))
                }),
        )
    }
}

impl Handler<AdmittedNodes> for IamActor {
    type Result = bool;

    fn handle(&mut self, msg: AdmittedNodes, ctx: &mut Context<Self>) -> Self::Result {
        let admitted = msg.0;
        let own = self.key.address();
        for peer in self.peers.list() {
            if peer.address != own && !admitted.contains(&peer.address) {
                tracing::warn!(peer = %peer.address, "not (or no longer) an admitted node: its announcements and tokens no longer count here");
            }
        }
        self.peers.retain(&own, |address| admitted.contains(address));
        self.tokens
            .retain(|_, claims| claims.iss == own || admitted.contains(&claims.iss));
        let now_admitted: Vec<Address> = self.ignored.keys().filter(|a| admitted.contains(a)).copied().collect();
        self.admitted = Some(admitted);
        for address in &now_admitted {
            if let Some(announcement) = self.ignored.remove(address) {
                ctx.address().do_send(PeerAnnounced(announcement));
            }
        }
        !now_admitted.is_empty()
    }
}

impl Handler<OwnAnnouncement> for IamActor {
    type Result = MessageResult<OwnAnnouncement>;

    fn handle(&mut self, _: OwnAnnouncement, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Announcement::signed(
            &self.key,
            &self.config.mesh,
            unix_millis(),
            &self.boot,
        ))
    }
}

impl Handler<Peers> for IamActor {
    type Result = MessageResult<Peers>;

    fn handle(&mut self, _: Peers, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.peers.list())
    }
}

impl Handler<VerifyNodeSignature> for IamActor {
    type Result = ResponseActFuture<Self, Result<Address, CmtpError>>;

    fn handle(&mut self, msg: VerifyNodeSignature, _: &mut Context<Self>) -> Self::Result {
        let request = RecoverSigner {
            message: msg.message,
            signature: msg.signature,
        };
        Box::pin(self.verifier.send(request).into_actor(self).map(|result, actor, _| {
            let (_, signer) = result.map_err(verifier_gone)?.map_err(signature_error)?;
            if actor.peers.contains(&signer) {
                Ok(signer)
            } else {
                Err(CmtpError::forbidden(format!("{signer} is not a node of this mesh")))
            }
        }))
    }
}
