//! # keqing-proto: the wire
//!
//! The only crate that knows the generated prost/tonic types. It offers the
//! rest of Keqing the sync protocol in domain terms
//! ([`keqing_shared::sync`]):
//! - for the server, [`SyncHandler`], a trait with domain types, and
//!   [`sync_server`], which wraps a handler into a tonic service (token from
//!   the `authorization` metadata, errors mapped to status codes);
//! - for the client, [`SyncConnection`], a connected client with domain
//!   types in and out;
//! - [`code_of`] / [`kind_of`]: the one mapping between [`SyncErrorKind`] and
//!   [`tonic::Code`].

use keqing_shared::lifecycle::{Notice, NoticeAnswer, NoticeKind, NoticeRequest};
use keqing_shared::sync::*;
use std::future::Future;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

mod reports;
pub use reports::{
    REPORTS_SERVICE_NAME, ReportsHandler, ReportsService, pb_report, report_from, reports_server,
};

/// Generated code. Other crates use it only through this crate's API.
pub mod pb {
    tonic::include_proto!("keqing.v1");
}

/// The encoded descriptor set of the protos, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/keqing_descriptor.bin"));

/// The gRPC status code of each kind of sync error.
pub fn code_of(kind: SyncErrorKind) -> Code {
    match kind {
        SyncErrorKind::Unauthenticated => Code::Unauthenticated,
        SyncErrorKind::PermissionDenied => Code::PermissionDenied,
        SyncErrorKind::InvalidArgument => Code::InvalidArgument,
        SyncErrorKind::ResourceExhausted => Code::ResourceExhausted,
        SyncErrorKind::FailedPrecondition => Code::FailedPrecondition,
        SyncErrorKind::Unavailable => Code::Unavailable,
        SyncErrorKind::Internal => Code::Internal,
        SyncErrorKind::Gone => Code::NotFound,
    }
}

/// The kind of sync error a status code means; codes Keqing's server never
/// sends (e.g. from a proxy) count as `Unavailable` or `Internal`.
pub fn kind_of(code: Code) -> SyncErrorKind {
    match code {
        Code::Unauthenticated => SyncErrorKind::Unauthenticated,
        Code::PermissionDenied => SyncErrorKind::PermissionDenied,
        Code::InvalidArgument | Code::OutOfRange => SyncErrorKind::InvalidArgument,
        Code::NotFound => SyncErrorKind::Gone,
        Code::ResourceExhausted => SyncErrorKind::ResourceExhausted,
        Code::FailedPrecondition | Code::AlreadyExists => SyncErrorKind::FailedPrecondition,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Aborted => {
            SyncErrorKind::Unavailable
        }
        _ => SyncErrorKind::Internal,
    }
}

/// The metadata key naming the change a push was refused for.
const CHANGE_KEY: &str = "keqing-change";

pub fn to_status(e: SyncError) -> Status {
    let mut status = Status::new(code_of(e.kind), e.message);
    if let Some(i) = e.change {
        status
            .metadata_mut()
            .insert(CHANGE_KEY, tonic::metadata::MetadataValue::from(i));
    }
    status
}

pub fn from_status(s: &Status) -> SyncError {
    // A connection that broke during a call (the server process died, the
    // line was cut) reaches the client as Unknown with the transport's
    // error as its source: the server is out of reach, not failing.
    let transport = std::error::Error::source(s)
        .filter(|e| e.is::<tonic::transport::Error>())
        .filter(|_| s.code() == Code::Unknown);
    // The HTTP/2 connection itself failed (tonic says INTERNAL): garbage
    // from the other end, e.g. a TLS server addressed as http://. The line,
    // not the server's work, failed.
    let h2 = s.code() == Code::Internal && s.message().starts_with("h2 protocol error");
    let e = match transport {
        Some(t) => transport_failure(s.message(), t),
        None if h2 => SyncError::new(
            SyncErrorKind::Unavailable,
            format!(
                "{}: the connection broke in HTTP/2 (a server speaking TLS addressed as http://? use https://)",
                s.message()
            ),
        ),
        None => SyncError::new(kind_of(s.code()), s.message().to_string()),
    };
    match s
        .metadata()
        .get(CHANGE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(i) => e.at_change(i),
        None => e,
    }
}

/// A connection that failed or broke, told apart by its causes: a TLS
/// handshake that a certificate failed (the server's, which this device
/// cannot verify, or this device's, which the server refused) is no network
/// trouble and waiting will not mend it; anything else is the server out of
/// reach. The message carries the whole chain of causes (tonic's own says
/// only "transport error").
fn transport_failure(context: &str, e: &(dyn std::error::Error + 'static)) -> SyncError {
    let chain = keqing_shared::printable::error_chain(context, e);
    let certificate = if chain.contains("invalid peer certificate") {
        Some(
            "服务器证书无法验证 the server's certificate does not verify (is --ca the CA that signed this server, and the address a name it was issued for?)",
        )
    } else if chain.contains("alert") && chain.contains("Certificate")
        || chain.contains("UnknownCA")
    {
        Some(
            "本设备证书被拒 the server refused this device's certificate, or wants one (keqing certificate --cert FILE --key FILE installs the one `keqing-server device cert` made)",
        )
    } else {
        None
    };
    match certificate {
        Some(why) => SyncError::new(SyncErrorKind::FailedPrecondition, format!("{why}: {chain}")),
        None => SyncError::new(SyncErrorKind::Unavailable, chain),
    }
}

/// A pull being served: its batches, and what the handler keeps alive until
/// the stream has been sent (dropped with the response stream, once its last
/// batch is handed to the transport, not when the handler has queued it:
/// the server counts a pull as in progress while the device still reads it).
pub struct PullFeed {
    pub batches: tokio::sync::mpsc::Receiver<Result<PullBatch, SyncError>>,
    pub keep_alive: Box<dyn Send + Sync>,
}

impl PullFeed {
    /// The next batch (`None` once the handler has sent everything).
    pub async fn recv(&mut self) -> Option<Result<PullBatch, SyncError>> {
        self.batches.recv().await
    }
}

/// What the server does, in domain terms. `caller` is the calling device's
/// bearer token as sent (possibly empty) and its TLS client certificate.
pub trait SyncHandler: Send + Sync + 'static {
    fn enroll(
        &self,
        caller: Caller,
        actor: Vec<u8>,
    ) -> impl Future<Output = Result<DeviceInfo, SyncError>> + Send;
    fn push(
        &self,
        caller: Caller,
        changes: Vec<ChangeEnvelope>,
    ) -> impl Future<Output = Result<PushAck, SyncError>> + Send;
    /// Starts a pull; batches arrive on the feed until `done`.
    fn pull(
        &self,
        caller: Caller,
        cursor: u64,
        epoch: String,
        max_batch: u32,
    ) -> impl Future<Output = Result<PullFeed, SyncError>> + Send;
    fn repair(
        &self,
        caller: Caller,
        docs: Vec<DocHeads>,
    ) -> impl Future<Output = Result<RepairAnswer, SyncError>> + Send;
    /// Keeps a device's reads in the read audit and answers with its
    /// office's other devices' reads.
    fn share_reads(
        &self,
        caller: Caller,
        exchange: ReadsExchange,
    ) -> impl Future<Output = Result<ReadsAnswer, SyncError>> + Send;
    /// Headquarters' transfers and erasures the device must act on.
    fn notices(
        &self,
        caller: Caller,
        request: NoticeRequest,
    ) -> impl Future<Output = Result<NoticeAnswer, SyncError>> + Send;
}

/// Adapts a [`SyncHandler`] to the generated tonic service.
pub struct SyncService<H> {
    handler: Arc<H>,
}

/// The tonic service for a handler, with Keqing's message size limits: a
/// larger message is refused with RESOURCE_EXHAUSTED before it is decoded.
pub fn sync_server<H: SyncHandler>(handler: Arc<H>) -> pb::sync_server::SyncServer<SyncService<H>> {
    pb::sync_server::SyncServer::new(SyncService { handler })
        .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(limits::MAX_MESSAGE_BYTES)
}

/// The service name, for the health service.
pub const SYNC_SERVICE_NAME: &str = "keqing.v1.Sync";

fn bearer<T>(req: &Request<T>) -> String {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The caller of a request: its bearer token and, over mutual TLS, the
/// SHA-256 of the certificate it presented (the leaf, verified by rustls
/// against the client CA before any request reaches here).
/// The metadata key a device's [`ClientState`] travels in.
pub const CLIENT_METADATA: &str = "keqing-client";

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    use sha2::Digest;
    let client = match req.metadata().get(CLIENT_METADATA) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| Status::invalid_argument("keqing-client metadata is not text"))
                .and_then(|v| ClientState::parse_header(v).map_err(Status::invalid_argument))?,
        ),
    };
    Ok(Caller {
        token: bearer(req),
        certificate: req
            .peer_certs()
            .and_then(|chain| chain.first().map(|leaf| sha2::Sha256::digest(leaf).into())),
        client,
    })
}

fn heads_from(doc: pb::DocHeads) -> Result<DocHeads, Status> {
    let heads = doc
        .heads
        .into_iter()
        .map(|h| {
            <[u8; 32]>::try_from(h.as_slice())
                .map_err(|_| Status::invalid_argument("a head is not 32 bytes"))
        })
        .collect::<Result<_, _>>()?;
    Ok(DocHeads {
        doc_id: doc.doc_id,
        heads,
    })
}

fn pb_heads(d: DocHeads) -> pb::DocHeads {
    pb::DocHeads {
        doc_id: d.doc_id,
        heads: d.heads.iter().map(|h| h.to_vec()).collect(),
    }
}

fn read_from(r: pb::Read) -> ReadEntry {
    ReadEntry {
        seq: r.seq,
        device: r.device,
        at: r.at,
        who: r.who,
        action: r.action,
        target: r.target,
    }
}

fn pb_read(r: ReadEntry) -> pb::Read {
    pb::Read {
        seq: r.seq,
        device: r.device,
        at: r.at,
        who: r.who,
        action: r.action,
        target: r.target,
    }
}

fn exchange_from(r: pb::ShareReadsRequest) -> ReadsExchange {
    ReadsExchange {
        reads: r.reads.into_iter().map(read_from).collect(),
        office_cursor: r.office_cursor,
    }
}

fn pb_exchange(e: ReadsExchange) -> pb::ShareReadsRequest {
    pb::ShareReadsRequest {
        reads: e.reads.into_iter().map(pb_read).collect(),
        office_cursor: e.office_cursor,
    }
}

fn answer_from(r: pb::ShareReadsResponse) -> ReadsAnswer {
    ReadsAnswer {
        stored_through: r.stored_through,
        office: r.office.into_iter().map(read_from).collect(),
        office_cursor: r.office_cursor,
        more: r.more,
    }
}

fn pb_answer(a: ReadsAnswer) -> pb::ShareReadsResponse {
    pb::ShareReadsResponse {
        stored_through: a.stored_through,
        office: a.office.into_iter().map(pb_read).collect(),
        office_cursor: a.office_cursor,
        more: a.more,
    }
}

fn notice_request_from(r: pb::NoticesRequest) -> NoticeRequest {
    NoticeRequest {
        cursor: r.cursor,
        ask: r.ask,
    }
}

fn pb_notice_request(r: NoticeRequest) -> pb::NoticesRequest {
    pb::NoticesRequest {
        cursor: r.cursor,
        ask: r.ask,
    }
}

/// A notice as sent; `None`: a kind this version does not know (skipped,
/// not fatal: a newer server may say more).
fn notice_from(n: pb::Notice) -> Option<Notice> {
    let kind = match n.kind.as_str() {
        "transfer" => NoticeKind::Transferred {
            from: n.from_office,
            to: n.to_office,
        },
        "erase" => NoticeKind::Erased,
        _ => return None,
    };
    Some(Notice {
        seq: n.seq,
        doc_id: n.doc_id,
        kind,
        at: n.at,
    })
}

fn pb_notice(n: Notice) -> pb::Notice {
    let (kind, from_office, to_office) = match n.kind {
        NoticeKind::Transferred { from, to } => ("transfer", from, to),
        NoticeKind::Erased => ("erase", String::new(), String::new()),
    };
    pb::Notice {
        seq: n.seq,
        doc_id: n.doc_id,
        kind: kind.to_string(),
        from_office,
        to_office,
        at: n.at,
    }
}

fn notice_answer_from(r: pb::NoticesResponse) -> NoticeAnswer {
    NoticeAnswer {
        notices: r.notices.into_iter().filter_map(notice_from).collect(),
        cursor: r.cursor,
        more: r.more,
    }
}

fn pb_notice_answer(a: NoticeAnswer) -> pb::NoticesResponse {
    pb::NoticesResponse {
        notices: a.notices.into_iter().map(pb_notice).collect(),
        cursor: a.cursor,
        more: a.more,
    }
}

fn change_from(c: pb::Change) -> ChangeEnvelope {
    ChangeEnvelope {
        doc_id: c.doc_id,
        bytes: c.bytes,
    }
}

fn pb_change(c: ChangeEnvelope) -> pb::Change {
    pb::Change {
        doc_id: c.doc_id,
        bytes: c.bytes,
    }
}

fn pb_batch(b: PullBatch) -> pb::PullBatch {
    pb::PullBatch {
        snapshots: b
            .snapshots
            .into_iter()
            .map(|s| pb::Snapshot {
                doc_id: s.doc_id,
                document: s.document,
            })
            .collect(),
        changes: b
            .changes
            .into_iter()
            .map(|c| pb::LoggedChange {
                seq: c.seq,
                doc_id: c.doc_id,
                bytes: c.bytes,
            })
            .collect(),
        cursor: b.cursor,
        done: b.done,
        epoch: b.epoch,
    }
}

fn batch_from(b: pb::PullBatch) -> PullBatch {
    PullBatch {
        snapshots: b
            .snapshots
            .into_iter()
            .map(|s| Snapshot {
                doc_id: s.doc_id,
                document: s.document,
            })
            .collect(),
        changes: b
            .changes
            .into_iter()
            .map(|c| LoggedChange {
                seq: c.seq,
                doc_id: c.doc_id,
                bytes: c.bytes,
            })
            .collect(),
        cursor: b.cursor,
        done: b.done,
        epoch: b.epoch,
    }
}

type PullStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::PullBatch, Status>> + Send>>;

#[tonic::async_trait]
impl<H: SyncHandler> pb::sync_server::Sync for SyncService<H> {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let caller = caller(&req)?;
        let info = self
            .handler
            .enroll(caller, req.into_inner().actor)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::EnrollResponse {
            device_id: info.device_id,
            device_name: info.name,
            office: info.office.unwrap_or_default(),
        }))
    }

    async fn push(
        &self,
        req: Request<pb::PushRequest>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        let caller = caller(&req)?;
        let changes = req
            .into_inner()
            .changes
            .into_iter()
            .map(change_from)
            .collect();
        let ack = self
            .handler
            .push(caller, changes)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::PushResponse {
            accepted: ack.accepted,
            duplicates: ack.duplicates,
            last_seq: ack.last_seq,
            log_before: ack.log_before,
            epoch: ack.epoch,
        }))
    }

    type PullStream = PullStream;

    async fn pull(&self, req: Request<pb::PullRequest>) -> Result<Response<PullStream>, Status> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let PullFeed {
            batches,
            keep_alive,
        } = self
            .handler
            .pull(caller, r.cursor, r.epoch, r.max_batch)
            .await
            .map_err(to_status)?;
        let stream = tokio_stream::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(batches),
            move |item| {
                let _ = &keep_alive;
                item.map(pb_batch).map_err(to_status)
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn repair(
        &self,
        req: Request<pb::RepairRequest>,
    ) -> Result<Response<pb::RepairResponse>, Status> {
        let caller = caller(&req)?;
        let docs = req
            .into_inner()
            .docs
            .into_iter()
            .map(heads_from)
            .collect::<Result<_, _>>()?;
        let answer = self.handler.repair(caller, docs).await.map_err(to_status)?;
        Ok(Response::new(pb::RepairResponse {
            missing: answer.missing.into_iter().map(pb_change).collect(),
            complete: answer.complete,
        }))
    }

    async fn share_reads(
        &self,
        req: Request<pb::ShareReadsRequest>,
    ) -> Result<Response<pb::ShareReadsResponse>, Status> {
        let caller = caller(&req)?;
        let exchange = exchange_from(req.into_inner());
        let answer = self
            .handler
            .share_reads(caller, exchange)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb_answer(answer)))
    }

    async fn notices(
        &self,
        req: Request<pb::NoticesRequest>,
    ) -> Result<Response<pb::NoticesResponse>, Status> {
        let caller = caller(&req)?;
        let request = notice_request_from(req.into_inner());
        let answer = self
            .handler
            .notices(caller, request)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb_notice_answer(answer)))
    }
}

/// A device's connection to the server.
#[derive(Clone)]
pub struct SyncConnection {
    client: pb::sync_client::SyncClient<tonic::transport::Channel>,
    channel: tonic::transport::Channel,
    auth: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    /// The `keqing-client` metadata every call carries, once set.
    state: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

/// The batches of one pull, as they arrive.
pub struct PullBatches {
    inner: tonic::Streaming<pb::PullBatch>,
}

impl PullBatches {
    pub async fn next(&mut self) -> Option<Result<PullBatch, SyncError>> {
        match self.inner.message().await {
            Ok(Some(b)) => Some(Ok(batch_from(b))),
            Ok(None) => None,
            Err(s) => Some(Err(from_status(&s))),
        }
    }
}

impl SyncConnection {
    /// Connects to `url` (e.g. `http://127.0.0.1:7600`) with a device token.
    pub async fn connect(
        url: &str,
        token: &str,
        timeout: std::time::Duration,
    ) -> Result<SyncConnection, SyncError> {
        Self::connect_with(url, token, timeout, &ClientTls::default()).await
    }

    /// Connects to `url`; an `https://` server is verified against
    /// `tls.ca_pem` (a PEM certificate of the CA that signed it) or, without
    /// one, the system's trusted roots, and is shown the device's own
    /// certificate when `tls` has one. Nothing is sent unless it verifies.
    pub async fn connect_with(
        url: &str,
        token: &str,
        timeout: std::time::Duration,
        tls: &ClientTls,
    ) -> Result<SyncConnection, SyncError> {
        let auth = format!("Bearer {token}")
            .parse()
            .map_err(|_| SyncError::invalid("the token has characters that cannot be sent"))?;
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| SyncError::invalid(format!("bad server address `{url}`: {e}")))?
            .connect_timeout(timeout)
            .timeout(std::time::Duration::from_secs(120));
        if url.starts_with("https://") {
            let mut config = match &tls.ca_pem {
                Some(pem) => tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                None => tonic::transport::ClientTlsConfig::new().with_native_roots(),
            };
            match (&tls.cert_pem, &tls.key_pem) {
                (Some(cert), Some(key)) => {
                    config = config.identity(tonic::transport::Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => {
                    return Err(SyncError::invalid(
                        "a device certificate needs its key, and a key its certificate",
                    ));
                }
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| SyncError::invalid(format!("TLS settings for `{url}`: {e}")))?;
        } else if tls.ca_pem.is_some() || tls.cert_pem.is_some() {
            return Err(SyncError::invalid(format!(
                "certificates were given but `{url}` is not https://"
            )));
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| transport_failure(&format!("cannot reach {url}"), &e))?;
        let client = pb::sync_client::SyncClient::new(channel.clone())
            .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(limits::MAX_MESSAGE_BYTES);
        Ok(SyncConnection {
            client,
            channel,
            auth,
            state: None,
        })
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut()
            .insert("authorization", self.auth.clone());
        if let Some(state) = &self.state {
            req.metadata_mut().insert(CLIENT_METADATA, state.clone());
        }
        req
    }

    /// What every call from now on says of the device (fleet health).
    pub fn set_client_state(&mut self, state: &ClientState) {
        self.state = state.to_header().parse().ok();
    }

    /// The report of `scope` over the days `from..=to`, computed by the server.
    pub async fn report(
        &mut self,
        scope: &keqing_shared::report::Scope,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<keqing_shared::report::Report, SyncError> {
        let req = self.request(pb::ReportRequest {
            office: scope.office().unwrap_or("").to_string(),
            from: keqing_shared::when::fmt_date(from),
            to: keqing_shared::when::fmt_date(to),
        });
        let r = pb::reports_client::ReportsClient::new(self.channel.clone())
            .get_report(req)
            .await
            .map_err(|s| from_status(&s))?;
        Ok(report_from(r.into_inner()))
    }

    pub async fn enroll(&mut self, actor: Vec<u8>) -> Result<DeviceInfo, SyncError> {
        let req = self.request(pb::EnrollRequest { actor });
        let r = self
            .client
            .enroll(req)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(DeviceInfo {
            device_id: r.device_id,
            name: r.device_name,
            office: (!r.office.is_empty()).then_some(r.office),
        })
    }

    pub async fn push(&mut self, changes: Vec<ChangeEnvelope>) -> Result<PushAck, SyncError> {
        let req = self.request(pb::PushRequest {
            changes: changes.into_iter().map(pb_change).collect(),
        });
        let r = self
            .client
            .push(req)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(PushAck {
            accepted: r.accepted,
            duplicates: r.duplicates,
            last_seq: r.last_seq,
            log_before: r.log_before,
            epoch: r.epoch,
        })
    }

    /// Pulls the scope's feed after `cursor` of server epoch `epoch` ("" if
    /// unknown; another epoch than the server's starts over from 0).
    pub async fn pull(
        &mut self,
        cursor: u64,
        epoch: &str,
        max_batch: u32,
    ) -> Result<PullBatches, SyncError> {
        let req = self.request(pb::PullRequest {
            cursor,
            max_batch,
            epoch: epoch.to_string(),
        });
        let inner = self
            .client
            .pull(req)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(PullBatches { inner })
    }

    pub async fn repair(&mut self, docs: Vec<DocHeads>) -> Result<RepairAnswer, SyncError> {
        let req = self.request(pb::RepairRequest {
            docs: docs.into_iter().map(pb_heads).collect(),
        });
        let r = self
            .client
            .repair(req)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(RepairAnswer {
            missing: r.missing.into_iter().map(change_from).collect(),
            complete: r.complete,
        })
    }

    /// Sends this device's reads and fetches its office's (see
    /// [`SyncHandler::share_reads`]).
    pub async fn share_reads(&mut self, exchange: ReadsExchange) -> Result<ReadsAnswer, SyncError> {
        let req = self.request(pb_exchange(exchange));
        let r = self
            .client
            .share_reads(req)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(answer_from(r))
    }

    /// Headquarters' transfers and erasures for this device (see
    /// [`SyncHandler::notices`]).
    pub async fn notices(&mut self, request: NoticeRequest) -> Result<NoticeAnswer, SyncError> {
        let req = self.request(pb_notice_request(request));
        let r = self
            .client
            .notices(req)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(notice_answer_from(r))
    }

    /// The generated client, for tests that send messages this API would
    /// never build (hostile or oversized ones).
    pub fn raw_client(&self) -> pb::sync_client::SyncClient<tonic::transport::Channel> {
        self.client.clone()
    }
}

/// Decodes `bytes` as every message a service or a client accepts from the
/// other side, and turns what decodes into domain values the way the
/// services do. For the fuzz harness: untrusted bytes must give errors,
/// never a panic, and whatever decodes must survive being encoded and
/// decoded again unchanged (a conversion that loses or invents a field
/// would fail here). Returns how many message types accepted the bytes, or
/// which type's value changed on the round trip.
pub fn decode_untrusted(bytes: &[u8]) -> Result<usize, String> {
    /// Decodes `bytes` as `M`, converts it with `from` (which may refuse
    /// it, as a service would), encodes it back with `to` and checks that
    /// the second decoding gives the same value.
    fn round_trip<M: prost::Message + Default, D: Clone + PartialEq + std::fmt::Debug>(
        name: &str,
        bytes: &[u8],
        from: impl Fn(M) -> Option<D>,
        to: impl Fn(D) -> M,
    ) -> Result<usize, String> {
        let Some(value) = M::decode(bytes).ok().and_then(&from) else {
            return Ok(0);
        };
        let encoded = to(value.clone()).encode_to_vec();
        let again = M::decode(encoded.as_slice())
            .map_err(|e| format!("{name}: its own encoding does not decode: {e}"))?;
        match from(again) {
            Some(v) if v == value => Ok(1),
            other => Err(format!("{name}: {value:?} came back as {other:?}")),
        }
    }
    fn same<M>(m: M) -> Option<M> {
        Some(m)
    }
    fn kept<M>(m: M) -> M {
        m
    }
    let decoded = [
        round_trip::<pb::EnrollRequest, _>("EnrollRequest", bytes, same, kept)?,
        round_trip(
            "PushRequest",
            bytes,
            |r: pb::PushRequest| Some(r.changes.into_iter().map(change_from).collect::<Vec<_>>()),
            |changes| pb::PushRequest {
                changes: changes.into_iter().map(pb_change).collect(),
            },
        )?,
        round_trip::<pb::PullRequest, _>("PullRequest", bytes, same, kept)?,
        round_trip(
            "RepairRequest",
            bytes,
            |r: pb::RepairRequest| {
                r.docs
                    .into_iter()
                    .map(heads_from)
                    .collect::<Result<Vec<_>, _>>()
                    .ok()
            },
            |docs| pb::RepairRequest {
                docs: docs.into_iter().map(pb_heads).collect(),
            },
        )?,
        round_trip::<pb::ReportRequest, _>("ReportRequest", bytes, same, kept)?,
        round_trip(
            "ShareReadsRequest",
            bytes,
            |r| Some(exchange_from(r)),
            pb_exchange,
        )?,
        round_trip(
            "ShareReadsResponse",
            bytes,
            |r| Some(answer_from(r)),
            pb_answer,
        )?,
        round_trip(
            "NoticesRequest",
            bytes,
            |r| Some(notice_request_from(r)),
            pb_notice_request,
        )?,
        round_trip(
            "NoticesResponse",
            bytes,
            |r| Some(notice_answer_from(r)),
            pb_notice_answer,
        )?,
        round_trip("PullBatch", bytes, |b| Some(batch_from(b)), pb_batch)?,
        round_trip("Report", bytes, |r| Some(report_from(r)), pb_report)?,
    ];
    Ok(decoded.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_http2_connection_is_the_line_not_a_server_fault() {
        let e = from_status(&Status::internal("h2 protocol error: http2 error"));
        assert_eq!(e.kind, SyncErrorKind::Unavailable);
        assert!(e.message.contains("use https://"), "{}", e.message);
        let fault = from_status(&Status::internal("the store failed"));
        assert_eq!(
            fault.kind,
            SyncErrorKind::Internal,
            "the server's own fault stays one"
        );
    }

    #[test]
    fn every_error_kind_round_trips_through_its_status_code() {
        for kind in SyncErrorKind::ALL {
            let status = to_status(SyncError::new(kind, "why"));
            let back = from_status(&status);
            assert_eq!(back.kind, kind, "{kind:?} → {:?}", status.code());
            assert_eq!(back.message, "why");
        }
    }

    #[test]
    fn the_change_a_push_was_refused_for_round_trips() {
        let e = SyncError::exhausted("too big").at_change(7);
        let back = from_status(&to_status(e.clone()));
        assert_eq!(back, e);
        let plain = SyncError::exhausted("too many requests");
        assert_eq!(from_status(&to_status(plain.clone())).change, None);
    }

    #[test]
    fn descriptor_set_names_the_service() {
        let text = String::from_utf8_lossy(FILE_DESCRIPTOR_SET);
        assert!(text.contains("keqing.v1") && text.contains("Sync"));
    }

    #[test]
    fn heads_must_be_32_bytes() {
        let bad = pb::DocHeads {
            doc_id: "d".into(),
            heads: vec![vec![0; 31]],
        };
        assert_eq!(heads_from(bad).unwrap_err().code(), Code::InvalidArgument);
    }
}
