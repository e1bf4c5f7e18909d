//! A scripted SyncML server for tests: listens on 127.0.0.1:0, answers each POST with the next
//! step of its script, and records every request (path with query, headers, body).
//!
//! Each [`Reply::Syncml`] is built from the device message it answers: same SessionID, MsgID
//! mirrored (as Fleet does), a SyncHdr Status referring to the device's MsgID, a Status 200 for
//! each command of the device message (as a well-behaved server sends), then the scripted
//! commands. Other replies produce faults: HTTP errors, a body cut mid-way, malformed XML, an
//! answer that never comes, a body of many megabytes streamed without being held in memory. When the script runs out the server answers 500, so a test that
//! expects fewer exchanges fails visibly. The server thread stops when the handle is dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use mdmsim::syncml::{self, Command, Item, ItemCmd, Status, SyncBody, SyncHdr, SyncMl};

/// One scripted server message (a reply to a device message).
#[derive(Clone, Default)]
pub struct ServerMsg {
    pub commands: Vec<Command>,
    pub final_: bool,
    pub resp_uri: Option<String>,
    /// Overrides the MsgRef of the SyncHdr status (to break the protocol on purpose).
    pub msg_ref: Option<String>,
    /// Overrides the message's own MsgID (by default the device's, mirrored).
    pub msg_id: Option<String>,
}

impl ServerMsg {
    /// Without `Final`: the package goes on in another message.
    pub fn not_final(mut self) -> Self {
        self.final_ = false;
        self
    }

    /// With a RespURI; `{origin}` in it becomes this server's `http://127.0.0.1:PORT`.
    pub fn resp_uri(mut self, uri: &str) -> Self {
        self.resp_uri = Some(uri.to_string());
        self
    }

    /// With a SyncHdr status whose MsgRef is `r`.
    pub fn msg_ref(mut self, r: &str) -> Self {
        self.msg_ref = Some(r.to_string());
        self
    }

    /// With this MsgID instead of the device's.
    pub fn msg_id(mut self, id: &str) -> Self {
        self.msg_id = Some(id.to_string());
        self
    }
}

/// What the server does with one request.
#[derive(Clone)]
pub enum Reply {
    /// 200 with a SyncML message built for the request.
    Syncml(ServerMsg),
    /// 200 with exactly this body.
    Raw(String),
    /// 200 with an empty body (the end of the session, as Fleet does).
    Empty,
    /// This HTTP status with a short text body.
    Http(u16),
    /// 429 with this Retry-After (seconds).
    TooMany(u64),
    /// Announces a long body, sends a part of it and closes the connection.
    CutBody,
    /// Never answers (until the server is dropped, at most 60 s).
    Hang,
    /// 200 with a SyncML message of about this many bytes, built for the request like
    /// [`Reply::Syncml`], whose one command is a Replace of the DevDetail DeviceName with a
    /// Data of filler; streamed in 64 KiB pieces, with its Content-Length or chunked without
    /// one. The server holds one piece, never the body.
    Huge { bytes: usize, chunked: bool },
}

/// A message with these commands and `Final`.
pub fn msg(commands: Vec<Command>) -> ServerMsg {
    ServerMsg { commands, final_: true, ..ServerMsg::default() }
}

/// A command with one item addressed to `uri`, with this data and Meta Format.
pub fn item_cmd(id: &str, uri: &str, data: Option<&str>, format: Option<&str>) -> ItemCmd {
    let mut item = Item::target(uri);
    item.data = data.map(str::to_string);
    item.meta = format.map(|f| Box::new(syncml::Meta::format(f)));
    ItemCmd { cmd_id: id.into(), items: vec![item], ..ItemCmd::default() }
}

/// The Status code the device sent for command `id` in `m`.
pub fn status_of(m: &SyncMl, id: &str) -> Option<String> {
    m.body.commands.iter().find_map(|c| match c {
        Command::Status(s) if s.cmd_ref == id => Some(s.data.clone()),
        _ => None,
    })
}

/// The Results data for command `id` in `m`.
pub fn results_of(m: &SyncMl, id: &str) -> Option<String> {
    m.body.commands.iter().find_map(|c| match c {
        Command::Results(r) if r.cmd_ref == id => r.items.first().and_then(|i| i.data.clone()),
        _ => None,
    })
}

/// A request the device made.
#[derive(Debug, Clone)]
pub struct Request {
    /// Path and query (`/MDM.svc?mode=Maintenance&Platform=WoA`).
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == &name.to_ascii_lowercase()).map(|(_, v)| v.as_str())
    }

    /// The body decoded as SyncML.
    pub fn syncml(&self) -> SyncMl {
        syncml::decode(&self.body).unwrap_or_else(|e| panic!("device sent invalid SyncML ({e}):\n{}", self.body))
    }
}

/// A running scripted server.
pub struct Server {
    /// `http://127.0.0.1:PORT/MDM.svc`
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    script: Script,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// Starts a server that plays `script`, one step per request.
    pub fn start(script: Vec<Reply>) -> Server {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let log = requests.clone();
        let script: Script = Arc::new(Mutex::new(script.into()));
        let played = script.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
                addr_tx.send(listener.local_addr().expect("local addr")).expect("send addr");
                let serve = async {
                    loop {
                        let Ok((sock, _)) = listener.accept().await else { return };
                        let script = played.clone();
                        let log = log.clone();
                        tokio::spawn(async move {
                            let _ = handle(sock, script, log).await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("server started");
        Server { url: format!("http://{addr}/MDM.svc"), requests, script, stop: Some(stop_tx) }
    }

    /// Appends steps to the script (for tests that decide the next session from the last one).
    pub fn then(&self, steps: Vec<Reply>) {
        self.script.lock().expect("lock").extend(steps);
    }

    /// The base address without the path (`http://127.0.0.1:PORT`).
    pub fn origin(&self) -> String {
        self.url.trim_end_matches("/MDM.svc").to_string()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("lock").clone()
    }

    /// The device messages so far, decoded.
    pub fn device_messages(&self) -> Vec<SyncMl> {
        self.requests().iter().map(Request::syncml).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

type Script = Arc<Mutex<std::collections::VecDeque<Reply>>>;

async fn handle(mut sock: TcpStream, script: Script, log: Arc<Mutex<Vec<Request>>>) -> std::io::Result<()> {
    // One request per connection: the answer says `Connection: close`.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 1 << 20 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let req = Request { path, headers, body: String::from_utf8_lossy(&body).into_owned() };
    log.lock().expect("lock").push(req.clone());
    let step = script.lock().expect("lock").pop_front();
    match step {
        Some(Reply::Syncml(m)) => {
            let text = syncml::encode(&build(&req, &m));
            respond(&mut sock, 200, &[], &text).await
        }
        Some(Reply::Raw(text)) => respond(&mut sock, 200, &[], &text).await,
        Some(Reply::Empty) => respond(&mut sock, 200, &[], "").await,
        Some(Reply::Http(code)) => respond(&mut sock, code, &[], "scripted failure").await,
        Some(Reply::TooMany(secs)) => respond(&mut sock, 429, &[("Retry-After", &secs.to_string())], "").await,
        Some(Reply::CutBody) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.syncml.dm+xml\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n";
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(b"<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr>").await?;
            sock.flush().await?;
            Ok(())
        }
        Some(Reply::Hang) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
        Some(Reply::Huge { bytes, chunked }) => huge(&mut sock, &req, bytes, chunked).await,
        None => respond(&mut sock, 500, &[], "script exhausted").await,
    }
}

/// Streams a 200 answer of about `bytes` bytes (see [`Reply::Huge`]); stops quietly when the
/// device hangs up.
async fn huge(sock: &mut TcpStream, req: &Request, bytes: usize, chunked: bool) -> std::io::Result<()> {
    const HOLE: &str = "FILLER-GOES-HERE";
    let replace = Command::Replace(ItemCmd {
        cmd_id: "r1".into(),
        items: vec![Item {
            target: Some("./DevDetail/Ext/Microsoft/DeviceName".into()),
            data: Some(HOLE.into()),
            ..Item::default()
        }],
        ..ItemCmd::default()
    });
    let text = syncml::encode(&build(req, &msg(vec![replace])));
    let (start, end) = text.split_once(HOLE).expect("the filler's place");
    let filler = bytes.saturating_sub(start.len() + end.len());
    let total = start.len() + filler + end.len();
    let length = if chunked { "Transfer-Encoding: chunked".to_string() } else { format!("Content-Length: {total}") };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.syncml.dm+xml\r\n{length}\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await?;
    let piece = vec![b'x'; 64 << 10];
    let mut send = async |part: &[u8]| -> std::io::Result<()> {
        if chunked {
            sock.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await?;
        }
        sock.write_all(part).await?;
        if chunked {
            sock.write_all(b"\r\n").await?;
        }
        Ok(())
    };
    send(start.as_bytes()).await?;
    let mut left = filler;
    while left > 0 {
        let n = left.min(piece.len());
        send(&piece[..n]).await?;
        left -= n;
    }
    send(end.as_bytes()).await?;
    if chunked {
        sock.write_all(b"0\r\n\r\n").await?;
    }
    sock.flush().await
}

async fn respond(sock: &mut TcpStream, code: u16, extra: &[(&str, &str)], body: &str) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} Scripted\r\nContent-Type: application/vnd.syncml.dm+xml\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body.as_bytes()).await?;
    sock.flush().await
}

/// The server message answering `req`.
fn build(req: &Request, m: &ServerMsg) -> SyncMl {
    let dev = req.syncml();
    let mut commands = vec![Command::Status(Status {
        cmd_id: "1".into(),
        msg_ref: m.msg_ref.clone().unwrap_or_else(|| dev.hdr.msg_id.clone()),
        cmd_ref: "0".into(),
        cmd: "SyncHdr".into(),
        data: "200".into(),
        ..Status::default()
    })];
    if m.msg_ref.is_none() {
        let to_status = dev.body.commands.iter().filter(|c| !matches!(c, Command::Status(_) | Command::Results(_)));
        for (i, c) in to_status.enumerate() {
            commands.push(Command::Status(Status {
                cmd_id: format!("ack{}", i + 1),
                msg_ref: dev.hdr.msg_id.clone(),
                cmd_ref: c.cmd_id().to_string(),
                cmd: c.name().to_string(),
                data: "200".into(),
                ..Status::default()
            }));
        }
    }
    commands.extend(m.commands.iter().cloned());
    SyncMl {
        hdr: SyncHdr {
            session_id: dev.hdr.session_id.clone(),
            msg_id: m.msg_id.clone().unwrap_or_else(|| dev.hdr.msg_id.clone()),
            target: dev.hdr.source.clone(),
            source: dev.hdr.target.clone(),
            resp_uri: m
                .resp_uri
                .as_ref()
                .map(|u| u.replace("{origin}", &format!("http://{}", req.header("host").unwrap_or_default()))),
            ..SyncHdr::default()
        },
        body: SyncBody { commands, final_: m.final_ },
    }
}
