//! The typed SyncML message model (OMA-DM 1.2 as Windows uses it, MS-MDM, OMA DM 1.2).
//!
//! Owns the data types only; reading and writing live in `read.rs` and `write.rs`. Every field
//! is already checked by the decoder: LocURIs are trimmed, CmdIDs are opaque strings (servers
//! send UUIDs), `Data` holds the logical text (escaped text, CDATA and embedded XML all arrive
//! here as the same string).

/// A whole SyncML message: header and body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncMl {
    pub hdr: SyncHdr,
    pub body: SyncBody,
}

/// The `SyncHdr` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncHdr {
    pub ver_dtd: String,
    pub ver_proto: String,
    /// Opaque; constant within a session.
    pub session_id: String,
    /// Counts 1, 2, 3... per sender; kept as received.
    pub msg_id: String,
    pub target: String,
    pub source: String,
    pub cred: Option<Box<Cred>>,
    pub meta: Option<Box<Meta>>,
    /// Where the recipient must send its response (honoured for the rest of the session).
    pub resp_uri: Option<String>,
    pub no_resp: bool,
}

impl Default for SyncHdr {
    fn default() -> Self {
        Self {
            ver_dtd: "1.2".into(),
            ver_proto: "DM/1.2".into(),
            session_id: String::new(),
            msg_id: "1".into(),
            target: String::new(),
            source: String::new(),
            cred: None,
            meta: None,
            resp_uri: None,
            no_resp: false,
        }
    }
}

/// Credentials (`Cred`) in a SyncHdr, e.g. `syncml:auth-md5` with a base64 digest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cred {
    pub meta: Meta,
    pub data: String,
}

/// A `Chal` in a Status: the authentication the peer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chal {
    pub meta: Meta,
}

/// The `Meta` element. Each known child is an optional string; `extra` keeps meta-information
/// we do not model (name, text) so that nothing is dropped silently.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    pub format: Option<String>,
    pub type_: Option<String>,
    pub mark: Option<String>,
    pub size: Option<String>,
    pub next_nonce: Option<String>,
    pub version: Option<String>,
    pub max_msg_size: Option<String>,
    pub max_obj_size: Option<String>,
    pub extra: Vec<(String, String)>,
}

impl Meta {
    /// A Meta holding only a Format.
    pub fn format(format: &str) -> Self {
        Self { format: Some(format.to_string()), ..Self::default() }
    }

    /// A Meta holding a Type and optionally a Format.
    pub fn typed(type_: &str, format: Option<&str>) -> Self {
        Self { type_: Some(type_.to_string()), format: format.map(str::to_string), ..Self::default() }
    }

    /// True when no child is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The `SyncBody` element: commands in order and the `Final` flag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncBody {
    pub commands: Vec<Command>,
    pub final_: bool,
}

/// One command of a SyncBody, Atomic or Sequence. Optional `Meta`, `Cred` and `Chal` are boxed:
/// unboxed, a `Meta` (eight optional strings) made every command and item several hundred bytes,
/// and a message turn spent a tenth of its time moving them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Alert(Alert),
    Add(ItemCmd),
    Replace(ItemCmd),
    Delete(ItemCmd),
    Get(ItemCmd),
    Exec(ItemCmd),
    Atomic(Container),
    Sequence(Container),
    Status(Status),
    Results(Results),
    /// A SyncML command this client does not support (Copy, Map, Sync, Put, Search), or an
    /// element in a command position that is not a command at all. Kept by name so the session
    /// can answer it with a status (406, or 400 for a non-command, OMA DM RepPro Atomic and Sequence) instead of
    /// dropping it or refusing the message.
    Unsupported {
        name: String,
        cmd_id: String,
    },
}

impl Command {
    /// The element name (`Add`, `Atomic`, ...), as used in a Status `Cmd`.
    pub fn name(&self) -> &str {
        match self {
            Command::Alert(_) => "Alert",
            Command::Add(_) => "Add",
            Command::Replace(_) => "Replace",
            Command::Delete(_) => "Delete",
            Command::Get(_) => "Get",
            Command::Exec(_) => "Exec",
            Command::Atomic(_) => "Atomic",
            Command::Sequence(_) => "Sequence",
            Command::Status(_) => "Status",
            Command::Results(_) => "Results",
            Command::Unsupported { name, .. } => name,
        }
    }

    /// The CmdID (empty when the peer sent none).
    pub fn cmd_id(&self) -> &str {
        match self {
            Command::Alert(a) => &a.cmd_id,
            Command::Add(c) | Command::Replace(c) | Command::Delete(c) | Command::Get(c) | Command::Exec(c) => {
                &c.cmd_id
            }
            Command::Atomic(c) | Command::Sequence(c) => &c.cmd_id,
            Command::Status(s) => &s.cmd_id,
            Command::Results(r) => &r.cmd_id,
            Command::Unsupported { cmd_id, .. } => cmd_id,
        }
    }
}

/// `Alert`: a code and optional items (client events carry Meta/Type and Data).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alert {
    pub cmd_id: String,
    pub no_resp: bool,
    pub data: String,
    pub correlator: Option<String>,
    pub items: Vec<Item>,
}

/// Add, Replace, Delete, Get and Exec share this shape.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemCmd {
    pub cmd_id: String,
    pub no_resp: bool,
    pub correlator: Option<String>,
    pub meta: Option<Box<Meta>>,
    pub items: Vec<Item>,
}

/// Atomic and Sequence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    pub cmd_id: String,
    pub no_resp: bool,
    pub meta: Option<Box<Meta>>,
    pub commands: Vec<Command>,
}

/// `Status`: the outcome of one command of the peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    pub cmd_id: String,
    pub msg_ref: String,
    pub cmd_ref: String,
    pub cmd: String,
    pub target_refs: Vec<String>,
    pub source_refs: Vec<String>,
    pub cred: Option<Box<Cred>>,
    pub chal: Option<Box<Chal>>,
    /// The status code text as sent (normally a number).
    pub data: String,
    pub items: Vec<Item>,
}

/// `Results`: the answer to a Get.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Results {
    pub cmd_id: String,
    pub msg_ref: String,
    pub cmd_ref: String,
    pub meta: Option<Box<Meta>>,
    pub target_refs: Vec<String>,
    pub source_refs: Vec<String>,
    pub items: Vec<Item>,
}

/// An `Item`: target and/or source LocURI, Meta, Data, MoreData.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Item {
    pub target: Option<String>,
    pub source: Option<String>,
    pub meta: Option<Box<Meta>>,
    pub data: Option<String>,
    pub more_data: bool,
}

impl Item {
    /// An item addressed to a target LocURI.
    pub fn target(uri: &str) -> Self {
        Self { target: Some(uri.to_string()), ..Self::default() }
    }

    /// An item from a source LocURI carrying data.
    pub fn source_data(uri: &str, data: &str) -> Self {
        Self { source: Some(uri.to_string()), data: Some(data.to_string()), ..Self::default() }
    }
}
