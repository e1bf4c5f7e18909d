//! Peak memory of one large server message: `cargo bench --bench big_message [-- MIB] [values]`.
//!
//! Builds a server message of `MIB` MiB (default 5) of a realistic shape: a NodeCache
//! provisioning burst (many Add commands of NodeCache `NodeURI`/`ExpectedValue` nodes, a few
//! Replaces of Policy settings and Gets of DevDetail between them), or with `values` a few
//! Replaces of one escaped ADMX policy value each, just under the 1 MiB a node may hold
//! (the worst case for copies of one value). Then it handles the message as the runner
//! does without a transcript: `session::start` for package 1, `AwaitingServer::receive` (one
//! decode, the command loop on a device made from the built-in Windows 10 template), and the
//! reply encoded. Prints the process peak RSS (Linux `/proc/self/status` VmHWM) before and
//! during the turn. The target (the fleet must survive a hostile server): under 300 MiB peak.
//!
//! The message stays under the device's default `max_message_bytes` (8 MiB) and each value
//! under `max_value_bytes` (1 MiB), so every command is executed: nothing is refused early.

use chrono::{TimeZone, Utc};

use mdmsim::device::{Device, DeviceId, Template};
use mdmsim::session::{self, DeviceCx, Mode, Next, SessionConfig, Trigger};
use mdmsim::syncml::{self, Command};
use mdmsim::tree::Profile;

/// A field of `/proc/self/status` in bytes (`VmHWM`, `VmRSS`); 0 where there is none.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// A server message of at least `bytes` bytes answering package 1 (MsgID 1) of session `sid`:
/// many small commands, or (`values`) a few commands with a value of almost 1 MiB each.
fn server_message(sid: &str, device_id: &str, bytes: usize, values: bool) -> (String, usize) {
    let mut m = String::with_capacity(bytes + 4096);
    m.push_str(r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>"#);
    m.push_str(&format!(
        "<SessionID>{sid}</SessionID><MsgID>1</MsgID><Target><LocURI>{device_id}</LocURI></Target>\
         <Source><LocURI>https://mdm.example/MDM.svc</LocURI></Source></SyncHdr><SyncBody>\n\
         <Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>\n"
    ));
    let mut id = 2;
    let mut commands = 0;
    while values && m.len() < bytes {
        // An ADMX-backed policy value, escaped as servers send it: 1 MiB less a little once
        // unescaped (the device's default `max_value_bytes`).
        let mut value = String::from("&lt;enabled/&gt;");
        let entry = "&lt;data id=\"Entry\" value=\"https://intranet.contoso.com/sites/a-rather-long-path\"/&gt;";
        let entry_len = r#"<data id="Entry" value="https://intranet.contoso.com/sites/a-rather-long-path"/>"#.len();
        for _ in 0..((1 << 20) - 64) / entry_len {
            value.push_str(entry);
        }
        m.push_str(&format!(
            "<Replace><CmdID>{id}</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Policy/Config/Browser/HomePages</LocURI></Target>\
             <Meta><Format xmlns=\"syncml:metinf\">chr</Format></Meta><Data>{value}</Data></Item></Replace>\n"
        ));
        id += 1;
        commands += 1;
    }
    while m.len() < bytes {
        let node = format!("./Vendor/MSFT/NodeCache/MS%20DM%20Server/Nodes/{id}");
        let uri = format!("./Vendor/MSFT/Policy/Config/Setting{id:06}/Value");
        m.push_str(&format!(
            "<Add><CmdID>{id}</CmdID>\n  <Item><Target><LocURI>{node}/NodeURI</LocURI></Target>\
             <Meta><Format xmlns=\"syncml:metinf\">chr</Format></Meta><Data>{uri}</Data></Item>\n  \
             <Item><Target><LocURI>{node}/ExpectedValue</LocURI></Target>\
             <Meta><Format xmlns=\"syncml:metinf\">chr</Format></Meta>\
             <Data>&lt;enabled/&gt;&lt;data id=\"Value{id}\" value=\"{id:08}\"/&gt;</Data></Item>\n</Add>\n"
        ));
        id += 1;
        if id % 50 == 0 {
            m.push_str(&format!(
                "<Replace><CmdID>{id}</CmdID><Item><Target><LocURI>./Device/Vendor/MSFT/Policy/Config/DeviceLock/MinDevicePasswordLength</LocURI></Target>\
                 <Meta><Format xmlns=\"syncml:metinf\">int</Format></Meta><Data>{}</Data></Item></Replace>\n\
                 <Get><CmdID>{}</CmdID><Item><Target><LocURI>./DevDetail/SwV</LocURI></Target></Item></Get>\n",
                4 + id % 10,
                id + 1
            ));
            id += 2;
            commands += 2;
        }
        commands += 1;
    }
    m.push_str("<Final/></SyncBody></SyncML>\n");
    (m, commands)
}

fn main() {
    let size_mib: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let values = std::env::args().any(|a| a == "values");
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("valid date");
    let registry = mdmsim::csp::registry();
    let template = Template::builtin(Profile::Win10);
    let mut device =
        Device::new(DeviceId::from_seed(1), Profile::Win10, "https://mdm.example/MDM.svc", "P", &template, now);
    let env = device.env(now);
    let device_id = device.id.to_string();
    let (text, commands) = server_message("1", &device_id, size_mib << 20, values);
    let before = status_bytes("VmRSS");
    // Peak from here on (Linux: writing 5 to clear_refs resets VmHWM to the current RSS).
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    let mut cx = DeviceCx { registry: &registry, state: &mut device.tree, env: &env };
    let cfg = SessionConfig::new(&device_id, "https://mdm.example/MDM.svc", "1", Mode::Maintenance, Trigger::Logon);
    let (awaiting, package1) = session::start_default(cfg, &mut cx);
    let _ = syncml::encode(&package1);
    let started = std::time::Instant::now();
    let (outcome, reply_bytes) = match awaiting.receive(&text, &mut cx) {
        Next::Send(_, reply) => {
            let wire = syncml::encode(&reply);
            // Which statuses the commands got: the turn must have executed them, not refused them.
            let mut codes = std::collections::BTreeMap::<String, usize>::new();
            for c in &reply.body.commands {
                if let Command::Status(s) = c {
                    *codes.entry(s.data.clone()).or_default() += 1;
                }
            }
            println!("statuses in the reply:     {codes:?}");
            ("reply sent", wire.len())
        }
        Next::Finished(_) => ("finished", 0),
        Next::Failed(f) => {
            eprintln!("the session failed: {}", f.error);
            ("failed", 0)
        }
    };
    let elapsed = started.elapsed();
    let peak = status_bytes("VmHWM");
    println!("server message:            {:8.1} MiB, {commands} commands", mib(text.len() as u64));
    println!("outcome:                   {outcome}, reply {:.1} MiB, in {elapsed:.2?}", mib(reply_bytes as u64));
    println!("RSS before the turn:       {:8.1} MiB (registry, template, device, the message text)", mib(before));
    println!("peak RSS during the turn:  {:8.1} MiB (VmHWM; target < 300 MiB)", mib(peak));
}
