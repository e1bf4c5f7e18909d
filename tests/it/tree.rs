//! The DM tree engine through SyncML commands: each status code the engine answers (200, 404, 405,
//! 418, 415, 400, Exec's own code, 507/216/500 in Atomic), Sequence, scopes, URI matching,
//! `?list=StructData` and `?prop=`, multi-item statuses. Commands are written as the server would
//! send them and go through the codec, so what is tested is what a server sees.
//!
//! The test CSP `Contoso` has a node of each kind the engine distinguishes: a Get-only permanent
//! leaf with a default, writable typed leaves (int, bool, b64, xml), a Replace-only leaf, dynamic
//! interior nodes with dynamic and permanent children, and Exec nodes.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use mdmsim::syncml::{self, Item, StatusCode};
use mdmsim::tree::{
    CmdOutcome, Csp, CspCx, Env, Format, NodeRef, NodeSpec, Ops, Profile, Registry, Scope, Settings, Tree, TreeState,
    WriteOp,
};

const G: Ops = Ops::GET;
const GR: Ops = Ops::GET.with(Ops::REPLACE);

static CONTOSO: NodeSpec = NodeSpec::interior(
    "Contoso",
    G,
    &[
        NodeSpec::leaf("Version", Format::Chr, G).default("2.1"),
        NodeSpec::interior(
            "Settings",
            G,
            &[
                NodeSpec::leaf("Level", Format::Int, GR).default("3"),
                NodeSpec::leaf("Enabled", Format::Bool, GR).default("false"),
                NodeSpec::leaf("Blob", Format::B64, Ops::ALL_WRITE).dynamic(),
                NodeSpec::leaf("Policy", Format::Xml, Ops::ALL_WRITE).dynamic(),
                NodeSpec::leaf("Secret", Format::Chr, Ops::REPLACE).default("hidden"),
            ],
        ),
        NodeSpec::interior(
            "Apps",
            G,
            &[NodeSpec::interior(
                "<AppId>",
                Ops::ALL_WRITE,
                &[
                    NodeSpec::leaf("Name", Format::Chr, Ops::ALL_WRITE).dynamic(),
                    NodeSpec::leaf("Install", Format::Null, Ops::GET.with(Ops::EXEC)).default(""),
                    NodeSpec::leaf("Status", Format::Int, G).default("10"),
                ],
            )
            .dynamic()],
        )
        .mime("com.contoso/1.0/Apps"),
        NodeSpec::leaf("Reset", Format::Null, Ops::EXEC),
    ],
)
.mime("com.contoso/1.0/MDM/Contoso");

/// A CSP with a node of every kind, its own validation and Exec behaviour.
struct Contoso;

impl Csp for Contoso {
    fn name(&self) -> &'static str {
        "Contoso"
    }

    fn root(&self) -> &'static str {
        "Vendor/MSFT/Contoso"
    }

    fn schema(&self) -> &'static NodeSpec {
        &CONTOSO
    }

    fn scopes(&self) -> &'static [Scope] {
        &[Scope::Device, Scope::User]
    }

    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        // An app's status is what its last install left behind.
        let mut seg = node.segments();
        match (seg.next(), seg.next(), seg.next()) {
            (Some("Apps"), Some(app), Some("Status")) => cx.value(&format!("Apps/{app}/Result")).map(str::to_string),
            _ => None,
        }
    }

    fn validate(
        &self,
        _cx: &CspCx<'_>,
        _op: WriteOp,
        node: NodeRef<'_>,
        value: Option<&str>,
    ) -> Result<(), StatusCode> {
        // The engine checked that Level is an int; the CSP knows its range.
        if node.rel == "Settings/Level"
            && !value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| (0..=10).contains(&v))
        {
            return Err(StatusCode::BadRequest);
        }
        Ok(())
    }

    fn exec(&self, cx: &mut CspCx<'_>, node: NodeRef<'_>, data: Option<&str>) -> StatusCode {
        if node.rel == "Reset" {
            cx.set("Settings/Level", "3");
            return StatusCode::Ok;
        }
        let app = node.segments().nth(1).unwrap_or_default().to_string();
        if data == Some("fail") {
            // What the hook changed before failing must be undone by the engine.
            cx.set(&format!("Apps/{app}/Result"), "60");
            return StatusCode::CommandFailed;
        }
        cx.set(&format!("Apps/{app}/Result"), "70");
        StatusCode::Accepted
    }
}

/// One emulated device: the shared registry plus Contoso, and its own values.
#[derive(Clone)]
struct Device {
    registry: Registry,
    state: TreeState,
    env: Env,
}

impl Device {
    fn new() -> Self {
        let mut registry = mdmsim::csp::registry();
        registry.register(Contoso);
        let mut state = TreeState::new();
        state.set_value("DevInfo/DevId", "0123456789ABCDEF0123456789ABCDEF");
        state.set_value("DevInfo/Man", "Contoso Ltd.");
        state.set_value("DevDetail/Ext/Microsoft/DeviceName", "PC-0001");
        state.commit();
        let env = Env {
            now: Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).single().expect("valid date"),
            profile: Profile::Win10,
            settings: Arc::new(Settings::default()),
        };
        Device { registry, state, env }
    }

    /// Decodes server commands (the body of a SyncBody) and executes them in order.
    fn run(&mut self, commands: &str) -> Vec<CmdOutcome> {
        let text = format!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>2</MsgID><Target><LocURI>0123456789ABCDEF0123456789ABCDEF</LocURI></Target><Source><LocURI>https://mdm.example/MDM.svc</LocURI></Source></SyncHdr><SyncBody>{commands}<Final/></SyncBody></SyncML>"#
        );
        let msg = syncml::decode(&text).unwrap_or_else(|e| panic!("test message does not decode: {e}\n{text}"));
        let mut tree = Tree::new(&self.registry, &mut self.state, &self.env);
        msg.body.commands.iter().flat_map(|c| tree.execute(c)).collect()
    }

    /// Runs commands and returns `(CmdID, Cmd, code)` for each outcome.
    fn codes(&mut self, commands: &str) -> Vec<(String, String, u16)> {
        self.run(commands).into_iter().map(|o| (o.cmd_id, o.cmd.into_owned(), o.code.code())).collect()
    }

    /// Runs one command and returns its single code.
    fn code(&mut self, command: &str) -> u16 {
        let out = self.run(command);
        assert_eq!(out.len(), 1, "{out:?}");
        out[0].code.code()
    }

    /// Gets one LocURI: the code and the Results items.
    fn get(&mut self, uri: &str) -> (u16, Vec<Item>) {
        let out = self.run(&get(uri));
        assert_eq!(out.len(), 1, "{out:?}");
        (out[0].code.code(), out[0].results.clone())
    }

    /// Gets one leaf and returns its value, failing on any code but 200.
    fn value(&mut self, uri: &str) -> String {
        let (code, items) = self.get(uri);
        assert_eq!(code, 200, "Get {uri}");
        items[0].data.clone().unwrap_or_default()
    }

    fn snapshot(&self) -> (TreeState, String) {
        (self.state.clone(), serde_json::to_string(&self.state).expect("state serialises"))
    }
}

fn get(uri: &str) -> String {
    format!("<Get><CmdID>1</CmdID><Item><Target><LocURI>{uri}</LocURI></Target></Item></Get>")
}

/// An Add/Replace/Delete/Exec of one item; `format` and `data` are optional.
fn cmd(name: &str, id: &str, uri: &str, format: Option<&str>, data: Option<&str>) -> String {
    let meta =
        format.map(|f| format!(r#"<Meta><Format xmlns="syncml:metinf">{f}</Format></Meta>"#)).unwrap_or_default();
    let data = data.map(|d| format!("<Data>{d}</Data>")).unwrap_or_default();
    format!("<{name}><CmdID>{id}</CmdID><Item><Target><LocURI>{uri}</LocURI></Target>{meta}{data}</Item></{name}>")
}

fn format_of(item: &Item) -> Option<&str> {
    item.meta.as_ref().and_then(|m| m.format.as_deref())
}

const ROOT: &str = "./Vendor/MSFT/Contoso";

#[test]
fn get_on_a_leaf_returns_results_with_the_node_format_and_200() {
    let mut d = Device::new();
    let (code, items) = d.get("./DevInfo/DevId");
    assert_eq!(code, 200);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].source.as_deref(), Some("./DevInfo/DevId"));
    assert_eq!(items[0].data.as_deref(), Some("0123456789ABCDEF0123456789ABCDEF"));
    assert_eq!(format_of(&items[0]), Some("chr"));
    // A default value, with the node's own format.
    let (code, items) = d.get(&format!("{ROOT}/Settings/Level"));
    assert_eq!((code, items[0].data.as_deref(), format_of(&items[0])), (200, Some("3"), Some("int")));
    let (_, items) = d.get(&format!("{ROOT}/Settings/Enabled"));
    assert_eq!(format_of(&items[0]), Some("bool"));
    // DevDetail computes LrgObj from the profile.
    assert_eq!(d.value("./DevDetail/LrgObj"), "true");
}

#[test]
fn get_on_an_interior_node_lists_child_names_with_format_node() {
    let mut d = Device::new();
    let (code, items) = d.get(ROOT);
    assert_eq!(code, 200);
    assert_eq!(items[0].data.as_deref(), Some("Version/Settings/Apps/Reset"));
    assert_eq!(format_of(&items[0]), Some("node"));
    // Dynamic children appear once added, URI-encoded (OMA DM Protocol §8, MS-MDM §3.1.5).
    assert_eq!(d.value(&format!("{ROOT}/Apps")), "");
    assert_eq!(d.code(&cmd("Add", "2", &format!("{ROOT}/Apps/MS%20DM%20Server"), Some("node"), None)), 200);
    assert_eq!(d.code(&cmd("Add", "3", &format!("{ROOT}/Apps/app1/Name"), Some("chr"), Some("One"))), 200);
    assert_eq!(d.value(&format!("{ROOT}/Apps")), "MS%20DM%20Server/app1");
    assert_eq!(d.value(&format!("{ROOT}/Apps/app1")), "Name/Install/Status");
    assert_eq!(d.value(&format!("{ROOT}/Apps/MS%20DM%20Server")), "Install/Status");
    // Above the CSP roots: ./Vendor/MSFT lists the CSPs registered there.
    let (code, items) = d.get("./Vendor/MSFT");
    assert_eq!(code, 200);
    assert!(items[0].data.as_deref().unwrap_or_default().split('/').any(|n| n == "Contoso"), "{items:?}");
}

#[test]
fn missing_nodes_are_404() {
    let mut d = Device::new();
    for uri in [
        "./Vendor/MSFT/NoSuchCsp/Node",
        "./DevInfo/Bogus",
        "./Vendor/MSFT/Contoso/Apps/ghost",
        "./Vendor/MSFT/Contoso/Apps/ghost/Name",
        "./Vendor/MSFT/Contoso/Settings/Blob",
        // MobileID is a DevDetail node, but a PC has no value for it.
        "./DevDetail/Ext/Microsoft/MobileID",
    ] {
        let (code, items) = d.get(uri);
        assert_eq!(code, 404, "Get {uri}");
        assert!(items.is_empty(), "a failed Get has no Results: {items:?}");
    }
    assert_eq!(d.code(&cmd("Delete", "2", &format!("{ROOT}/Apps/ghost"), None, None)), 404);
    assert_eq!(d.code(&cmd("Exec", "3", &format!("{ROOT}/Apps/ghost/Install"), None, None)), 404);
}

#[test]
fn operations_the_node_does_not_allow_are_405() {
    let mut d = Device::new();
    assert_eq!(d.code(&cmd("Replace", "1", &format!("{ROOT}/Version"), Some("chr"), Some("9"))), 405);
    assert_eq!(d.code(&cmd("Delete", "2", &format!("{ROOT}/Version"), None, None)), 405);
    assert_eq!(d.code(&cmd("Exec", "3", &format!("{ROOT}/Version"), None, None)), 405);
    assert_eq!(d.get(&format!("{ROOT}/Settings/Secret")).0, 405);
    assert_eq!(d.get(&format!("{ROOT}/Reset")).0, 405);
    assert_eq!(d.code(&cmd("Replace", "4", "./DevInfo/DevId", Some("chr"), Some("X"))), 405);
    assert_eq!(d.code(&cmd("Replace", "5", ROOT, Some("node"), None)), 405);
    // An interior node has no value to replace, even when its table allows Replace: the entry
    // must stay an interior node (regression: it used to become an empty leaf).
    assert_eq!(d.code(&cmd("Add", "7", &format!("{ROOT}/Apps/app1/Name"), Some("chr"), Some("One"))), 200);
    let before = d.snapshot();
    assert_eq!(d.code(&cmd("Replace", "8", &format!("{ROOT}/Apps/app1"), Some("node"), None)), 405);
    assert_eq!(d.snapshot(), before);
    assert_eq!(d.value(&format!("{ROOT}/Apps/app1")), "Name/Install/Status");
    // The Replace-only node takes a write.
    assert_eq!(d.code(&cmd("Replace", "6", &format!("{ROOT}/Settings/Secret"), Some("chr"), Some("s"))), 200);
}

#[test]
fn add_on_an_existing_node_is_418_and_replace_on_a_missing_node_is_404() {
    let mut d = Device::new();
    let add = cmd("Add", "1", &format!("{ROOT}/Apps/app1"), Some("node"), None);
    assert_eq!(d.code(&add), 200);
    assert_eq!(d.code(&add), 418);
    let name = format!("{ROOT}/Apps/app1/Name");
    assert_eq!(d.code(&cmd("Replace", "2", &name, Some("chr"), Some("One"))), 404);
    assert_eq!(d.code(&cmd("Add", "3", &name, Some("chr"), Some("One"))), 200);
    assert_eq!(d.code(&cmd("Add", "4", &name, Some("chr"), Some("Again"))), 418);
    assert_eq!(d.code(&cmd("Replace", "5", &name, Some("chr"), Some("Two"))), 200);
    assert_eq!(d.value(&name), "Two");
    // A permanent leaf always exists.
    assert_eq!(d.code(&cmd("Add", "6", &format!("{ROOT}/Settings/Level"), Some("int"), Some("4"))), 418);
    assert_eq!(d.code(&cmd("Replace", "7", &format!("{ROOT}/Settings/Blob"), Some("b64"), Some("AA=="))), 404);
}

#[test]
fn a_wrong_format_is_415_and_a_bad_value_is_400() {
    let mut d = Device::new();
    let level = format!("{ROOT}/Settings/Level");
    assert_eq!(d.code(&cmd("Replace", "1", &level, Some("b64"), Some("AA=="))), 415);
    assert_eq!(d.code(&cmd("Replace", "2", &level, Some("bogus"), Some("4"))), 415);
    assert_eq!(d.code(&cmd("Replace", "3", &level, Some("int"), Some("four"))), 400);
    assert_eq!(d.code(&cmd("Replace", "4", &format!("{ROOT}/Settings/Enabled"), Some("bool"), Some("maybe"))), 400);
    assert_eq!(d.code(&cmd("Add", "5", &format!("{ROOT}/Settings/Blob"), Some("b64"), Some("not base64!"))), 400);
    // The CSP's own check: the value is an int but out of range.
    assert_eq!(d.code(&cmd("Replace", "6", &level, Some("int"), Some("42"))), 400);
    assert_eq!(d.value(&level), "3", "refused writes change nothing");
    // Formats servers mix are accepted: chr for an int, chr for xml; bools are normalised.
    assert_eq!(d.code(&cmd("Replace", "7", &level, Some("chr"), Some(" 7 "))), 200);
    assert_eq!(d.value(&level), "7");
    assert_eq!(d.code(&cmd("Replace", "8", &format!("{ROOT}/Settings/Enabled"), None, Some("TRUE"))), 200);
    assert_eq!(d.value(&format!("{ROOT}/Settings/Enabled")), "true");
    let policy = format!("{ROOT}/Settings/Policy");
    assert_eq!(d.code(&cmd("Add", "9", &policy, Some("chr"), Some("&lt;enabled/&gt;"))), 200);
    assert_eq!(d.value(&policy), "<enabled/>");
}

#[test]
fn exec_returns_the_status_the_csp_gives_and_a_failed_exec_changes_nothing() {
    let mut d = Device::new();
    assert_eq!(d.code(&cmd("Add", "1", &format!("{ROOT}/Apps/app1"), Some("node"), None)), 200);
    let install = format!("{ROOT}/Apps/app1/Install");
    let before = d.snapshot();
    assert_eq!(d.code(&cmd("Exec", "2", &install, Some("chr"), Some("fail"))), 500);
    assert_eq!(d.snapshot(), before, "the hook's write was undone");
    assert_eq!(d.value(&format!("{ROOT}/Apps/app1/Status")), "10");
    assert_eq!(d.code(&cmd("Exec", "3", &install, Some("chr"), Some("go"))), 202);
    assert_eq!(d.value(&format!("{ROOT}/Apps/app1/Status")), "70");
    assert_eq!(d.code(&cmd("Replace", "4", &format!("{ROOT}/Settings/Level"), Some("int"), Some("9"))), 200);
    assert_eq!(d.code(&cmd("Exec", "5", &format!("{ROOT}/Reset"), None, None)), 200);
    assert_eq!(d.value(&format!("{ROOT}/Settings/Level")), "3");
}

#[test]
fn atomic_success_applies_every_child() {
    let mut d = Device::new();
    let out = d.codes(&format!(
        "<Atomic><CmdID>10</CmdID>{}{}{}</Atomic>",
        cmd("Add", "11", &format!("{ROOT}/Apps/app1/Name"), Some("chr"), Some("One")),
        cmd("Replace", "12", &format!("{ROOT}/Settings/Level"), Some("int"), Some("5")),
        cmd("Exec", "13", &format!("{ROOT}/Apps/app1/Install"), None, None),
    ));
    let expect = [("10", "Atomic", 200), ("11", "Add", 200), ("12", "Replace", 200), ("13", "Exec", 202)];
    assert_eq!(out, expect.map(|(i, c, n)| (i.to_string(), c.to_string(), n)));
    assert_eq!(d.value(&format!("{ROOT}/Apps/app1/Name")), "One");
    assert_eq!(d.value(&format!("{ROOT}/Settings/Level")), "5");
    assert_eq!(d.value(&format!("{ROOT}/Apps/app1/Status")), "70");
}

#[test]
fn atomic_failure_is_507_rolls_back_with_216_and_leaves_the_tree_byte_for_byte_as_before() {
    let mut d = Device::new();
    assert_eq!(d.code(&cmd("Add", "1", &format!("{ROOT}/Apps/keep/Name"), Some("chr"), Some("Keep"))), 200);
    let before = d.snapshot();
    let out = d.codes(&format!(
        "<Atomic><CmdID>20</CmdID>{}{}{}{}{}</Atomic>",
        cmd("Add", "21", &format!("{ROOT}/Apps/app1/Name"), Some("chr"), Some("One")),
        cmd("Delete", "22", &format!("{ROOT}/Apps/keep"), None, None),
        cmd("Exec", "23", &format!("{ROOT}/Apps/app1/Install"), None, None),
        cmd("Replace", "24", &format!("{ROOT}/Settings/Level"), Some("int"), Some("four")),
        cmd("Replace", "25", &format!("{ROOT}/Settings/Enabled"), Some("bool"), Some("true")),
    ));
    let expect = [
        ("20", "Atomic", 507),
        ("21", "Add", 216),
        ("22", "Delete", 216),
        ("23", "Exec", 216),
        ("24", "Replace", 400),
        ("25", "Replace", 216),
    ];
    assert_eq!(out, expect.map(|(i, c, n)| (i.to_string(), c.to_string(), n)));
    let after = d.snapshot();
    assert_eq!(after.0, before.0);
    assert_eq!(after.1, before.1, "the serialised state differs");
    assert_eq!(d.value(&format!("{ROOT}/Apps/keep/Name")), "Keep");
    assert_eq!(d.get(&format!("{ROOT}/Apps/app1")).0, 404);
}

#[test]
fn nested_atomic_is_500_inside_and_507_outside() {
    let mut d = Device::new();
    let before = d.snapshot();
    let inner = format!(
        "<Atomic><CmdID>32</CmdID>{}</Atomic>",
        cmd("Replace", "33", &format!("{ROOT}/Settings/Level"), Some("int"), Some("5"))
    );
    let out = d.codes(&format!(
        "<Atomic><CmdID>30</CmdID>{}{inner}</Atomic>",
        cmd("Add", "31", &format!("{ROOT}/Apps/app1/Name"), Some("chr"), Some("One"))
    ));
    let expect = [("30", "Atomic", 507), ("31", "Add", 216), ("32", "Atomic", 500)];
    assert_eq!(out, expect.map(|(i, c, n)| (i.to_string(), c.to_string(), n)));
    assert_eq!(d.snapshot(), before);
}

#[test]
fn add_then_replace_of_the_same_node_inside_atomic_is_500() {
    let mut d = Device::new();
    let before = d.snapshot();
    let out = d.codes(&format!(
        "<Atomic><CmdID>70</CmdID>{}{}</Atomic>",
        cmd("Add", "71", &format!("{ROOT}/Apps/app1/Name"), Some("chr"), Some("One")),
        // The same node, spelt with the Device prefix.
        cmd("Replace", "72", "./Device/Vendor/MSFT/Contoso/Apps/app1/Name", Some("chr"), Some("Two")),
    ));
    let expect = [("70", "Atomic", 507), ("71", "Add", 216), ("72", "Replace", 500)];
    assert_eq!(out, expect.map(|(i, c, n)| (i.to_string(), c.to_string(), n)));
    assert_eq!(d.snapshot(), before);
    // Outside an Atomic the same pair is fine.
    assert_eq!(d.code(&cmd("Add", "73", &format!("{ROOT}/Apps/app1/Name"), Some("chr"), Some("One"))), 200);
    assert_eq!(d.code(&cmd("Replace", "74", &format!("{ROOT}/Apps/app1/Name"), Some("chr"), Some("Two"))), 200);
}

#[test]
fn get_inside_atomic_is_500_and_fails_the_atomic() {
    let mut d = Device::new();
    let before = d.snapshot();
    let out = d.run(&format!(
        "<Atomic><CmdID>40</CmdID>{}<Get><CmdID>42</CmdID><Item><Target><LocURI>./DevInfo/DevId</LocURI></Target></Item></Get></Atomic>",
        cmd("Replace", "41", &format!("{ROOT}/Settings/Level"), Some("int"), Some("5"))
    ));
    let codes: Vec<u16> = out.iter().map(|o| o.code.code()).collect();
    assert_eq!(codes, [507, 216, 500]);
    assert!(out.iter().all(|o| o.results.is_empty()), "no Results from inside an Atomic");
    assert_eq!(d.snapshot(), before);
}

#[test]
fn sequence_runs_in_order_and_keeps_what_succeeded() {
    let mut d = Device::new();
    let name = format!("{ROOT}/Apps/app1/Name");
    let out = d.run(&format!(
        "<Sequence><CmdID>50</CmdID>{}{}{}{}</Sequence>",
        cmd("Add", "51", &name, Some("chr"), Some("One")),
        cmd("Replace", "52", &format!("{ROOT}/Settings/Level"), Some("int"), Some("99")),
        cmd("Replace", "53", &name, Some("chr"), Some("Two")),
        get(&name).replace("<CmdID>1</CmdID>", "<CmdID>54</CmdID>"),
    ));
    let codes: Vec<(&str, u16)> = out.iter().map(|o| (o.cmd_id.as_str(), o.code.code())).collect();
    assert_eq!(codes, [("50", 200), ("51", 200), ("52", 400), ("53", 200), ("54", 200)]);
    // The Get inside the Sequence saw the Replace before it.
    assert_eq!(out[4].results[0].data.as_deref(), Some("Two"));
    assert_eq!(d.value(&name), "Two");
    assert_eq!(d.value(&format!("{ROOT}/Settings/Level")), "3");
}

#[test]
fn device_prefix_names_the_same_node_and_user_scope_is_separate() {
    let mut d = Device::new();
    let level = "Vendor/MSFT/Contoso/Settings/Level";
    assert_eq!(d.code(&cmd("Replace", "1", &format!("./Device/{level}"), Some("int"), Some("5"))), 200);
    let (code, items) = d.get(&format!("./{level}"));
    assert_eq!(code, 200);
    assert_eq!(items[0].data.as_deref(), Some("5"));
    assert_eq!(items[0].source.as_deref(), Some("./Vendor/MSFT/Contoso/Settings/Level"));
    let (_, items) = d.get(&format!("./Device/{level}"));
    assert_eq!(items[0].source.as_deref(), Some("./Device/Vendor/MSFT/Contoso/Settings/Level"));
    assert_eq!(d.value("./Device/DevInfo/Man"), "Contoso Ltd.");
    // The user's Level is its own value.
    assert_eq!(d.value(&format!("./User/{level}")), "3");
    assert_eq!(d.code(&cmd("Replace", "2", &format!("./User/{level}"), Some("int"), Some("8"))), 200);
    assert_eq!(d.value(&format!("./User/{level}")), "8");
    assert_eq!(d.value(&format!("./{level}")), "5");
    // DevInfo is a device-only CSP.
    assert_eq!(d.get("./User/DevInfo/DevId").0, 404);
}

#[test]
fn percent_escapes_match_decoded_names_and_results_echo_the_locuri_as_received() {
    let mut d = Device::new();
    let add = cmd("Add", "1", &format!("{ROOT}/Apps/%7BB316008A-141D%7D/Name"), Some("chr"), Some("Braced"));
    assert_eq!(d.code(&add), 200);
    assert_eq!(d.value(&format!("{ROOT}/Apps")), "%7BB316008A-141D%7D");
    for sent in [
        "./Vendor/MSFT/Contoso/Apps/%7BB316008A-141D%7D/Name",
        "./Vendor/MSFT/Contoso/Apps/%7bB316008A-141D%7d/Name",
        "./Vendor/MSFT/Contoso/Apps/{B316008A-141D}/Name",
        "./Device/Vendor/MSFT/Contoso/Apps/%7BB316008A-141D%7D/Name",
    ] {
        let (code, items) = d.get(sent);
        assert_eq!(code, 200, "Get {sent}");
        assert_eq!(items[0].source.as_deref(), Some(sent));
        assert_eq!(items[0].data.as_deref(), Some("Braced"));
    }
    // Whitespace and newlines around a LocURI (the seeds' own style) do not matter.
    let (code, items) = d.get("\n      ./Vendor/MSFT/Contoso/Apps/%7BB316008A-141D%7D/Name\n   ");
    assert_eq!((code, items[0].source.as_deref()), (200, Some("./Vendor/MSFT/Contoso/Apps/%7BB316008A-141D%7D/Name")));
}

#[test]
fn list_struct_data_returns_one_item_per_node_and_prop_returns_properties() {
    let mut d = Device::new();
    assert_eq!(d.code(&cmd("Add", "1", &format!("{ROOT}/Apps/app%201/Name"), Some("chr"), Some("One"))), 200);
    let (code, items) = d.get(&format!("{ROOT}/Apps?list=StructData"));
    assert_eq!(code, 200);
    let shown: Vec<(&str, &str, &str)> = items
        .iter()
        .map(|i| (i.source.as_deref().unwrap_or(""), format_of(i).unwrap_or(""), i.data.as_deref().unwrap_or("")))
        .collect();
    let apps = "./Vendor/MSFT/Contoso/Apps";
    // The shape of the EnterpriseAppManagement seed's StructData example: interior nodes with
    // Format node and no Data, leaves with Source and Data only, breadth first.
    assert_eq!(
        shown,
        [
            (apps, "node", ""),
            (&*format!("{apps}/app%201"), "node", ""),
            (&*format!("{apps}/app%201/Name"), "", "One"),
            (&*format!("{apps}/app%201/Install"), "", ""),
            (&*format!("{apps}/app%201/Status"), "", "10"),
        ]
    );
    let prop = |d: &mut Device, uri: &str| d.value(uri);
    assert_eq!(prop(&mut d, &format!("{ROOT}/Apps?prop=Type")), "com.contoso/1.0/Apps");
    assert_eq!(prop(&mut d, &format!("{ROOT}?prop=Type")), "com.contoso/1.0/MDM/Contoso");
    assert_eq!(prop(&mut d, &format!("{ROOT}/Settings/Level?prop=Format")), "int");
    assert_eq!(prop(&mut d, &format!("{ROOT}/Settings/Level?prop=Type")), "text/plain");
    assert_eq!(prop(&mut d, "./DevInfo/DevId?prop=Format"), "chr");
    let (code, items) = d.get(&format!("{ROOT}/Settings/Level?prop=Format"));
    assert_eq!((code, items[0].source.as_deref()), (200, Some("./Vendor/MSFT/Contoso/Settings/Level?prop=Format")));
    assert_eq!(d.get(&format!("{ROOT}/Settings/Level?prop=Bogus")).0, 406);
    assert_eq!(d.get(&format!("{ROOT}/Apps/ghost?prop=Format")).0, 404);
}

#[test]
fn a_multi_item_command_gets_one_status_per_item_with_target_ref_when_codes_differ() {
    let mut d = Device::new();
    let out = d.run(
        "<Get><CmdID>60</CmdID>\
         <Item><Target><LocURI>./DevInfo/DevId</LocURI></Target></Item>\
         <Item><Target><LocURI>./DevInfo/Nope</LocURI></Target></Item>\
         <Item><Target><LocURI>./Vendor/MSFT/Contoso/Settings/Secret</LocURI></Target></Item></Get>",
    );
    let shown: Vec<(&str, u16, &[String], usize)> =
        out.iter().map(|o| (o.cmd_id.as_str(), o.code.code(), o.target_refs.as_slice(), o.results.len())).collect();
    assert_eq!(
        shown,
        [
            ("60", 200, &["./DevInfo/DevId".to_string()][..], 1),
            ("60", 404, &["./DevInfo/Nope".to_string()][..], 0),
            ("60", 405, &["./Vendor/MSFT/Contoso/Settings/Secret".to_string()][..], 0),
        ]
    );
    // The same code for every item: one status, every result.
    let out = d.run(
        "<Get><CmdID>61</CmdID>\
         <Item><Target><LocURI>./DevInfo/DevId</LocURI></Target></Item>\
         <Item><Target><LocURI>./DevInfo/Man</LocURI></Target></Item></Get>",
    );
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].code.code(), out[0].target_refs.len(), out[0].results.len()), (200, 0, 2));
    // A multi-item write where one item fails keeps the others (outside an Atomic).
    let out = d.codes(&format!(
        "<Add><CmdID>62</CmdID>{}{}</Add>",
        "<Item><Target><LocURI>./Vendor/MSFT/Contoso/Apps/a/Name</LocURI></Target><Data>A</Data></Item>",
        "<Item><Target><LocURI>./Vendor/MSFT/Contoso/Version</LocURI></Target><Data>B</Data></Item>"
    ));
    assert_eq!(out.iter().map(|o| o.2).collect::<Vec<_>>(), [200, 418]);
    assert_eq!(d.value("./Vendor/MSFT/Contoso/Apps/a/Name"), "A");
}

#[test]
fn commands_without_cmdid_or_items_and_unsupported_commands_get_a_status() {
    let mut d = Device::new();
    assert_eq!(d.code("<Get><Item><Target><LocURI>./DevInfo/DevId</LocURI></Target></Item></Get>"), 400);
    assert_eq!(d.code("<Get><CmdID>1</CmdID></Get>"), 412);
    let before = d.snapshot();
    let atomic =
        format!("<Atomic>{}</Atomic>", cmd("Replace", "9", &format!("{ROOT}/Settings/Level"), Some("int"), Some("5")));
    assert_eq!(d.codes(&atomic), [(String::new(), "Atomic".to_string(), 400)]);
    assert_eq!(d.snapshot(), before, "the children of a command without CmdID are not run");
    assert_eq!(d.code("<Copy><CmdID>2</CmdID></Copy>"), 406);
    assert_eq!(d.code(&get("/Vendor/MSFT/Contoso")), 400);
    assert_eq!(d.code(&get("./Vendor//MSFT")), 400);
    // Not a command at all: 400, also inside an Atomic, which then fails (OMA DM RepPro Atomic and Sequence).
    assert_eq!(d.code("<Replase><CmdID>3</CmdID></Replase>"), 400);
    let before = d.snapshot();
    let out = d.codes(&format!(
        "<Atomic><CmdID>4</CmdID>{}<Item><Target><LocURI>./DevInfo/DevId</LocURI></Target></Item></Atomic>",
        cmd("Replace", "5", &format!("{ROOT}/Settings/Level"), Some("int"), Some("5"))
    ));
    let codes: Vec<(&str, &str, u16)> = out.iter().map(|(i, c, n)| (i.as_str(), c.as_str(), *n)).collect();
    assert_eq!(codes, [("4", "Atomic", 507), ("5", "Replace", 216), ("", "Item", 400)]);
    assert_eq!(d.snapshot(), before);
    // Alerts, Statuses and Results are the session's business, not the tree's.
    assert!(d.run("<Alert><CmdID>3</CmdID><Data>1222</Data></Alert>").is_empty());
}

/// One random child command for an Atomic: valid and invalid writes, Execs that fail, on nodes
/// that may or may not exist.
fn random_child(rng: &mut ChaCha8Rng, id: usize) -> String {
    let id = id.to_string();
    let app = ["a", "b", "%7Bc%7D"][rng.random_range(0..3usize)];
    match rng.random_range(0..8u8) {
        0 => cmd("Add", &id, &format!("{ROOT}/Apps/{app}/Name"), Some("chr"), Some("n")),
        1 => cmd("Replace", &id, &format!("{ROOT}/Apps/{app}/Name"), Some("chr"), Some("m")),
        2 => cmd("Delete", &id, &format!("{ROOT}/Apps/{app}"), None, None),
        // Levels above 10 are refused by the CSP.
        3 => {
            let level = rng.random_range(0..14u8).to_string();
            cmd("Replace", &id, &format!("{ROOT}/Settings/Level"), Some("int"), Some(&level))
        }
        4 => {
            let data = if rng.random_range(0..10u8) < 3 { "fail" } else { "go" };
            cmd("Exec", &id, &format!("{ROOT}/Apps/{app}/Install"), None, Some(data))
        }
        5 => cmd("Add", &id, &format!("{ROOT}/Settings/Blob"), Some("b64"), Some("QUJD")),
        6 => cmd("Delete", &id, &format!("{ROOT}/Settings/Blob"), None, None),
        _ => cmd("Add", &id, &format!("{ROOT}/Apps/{app}"), Some("node"), None),
    }
}

#[test]
fn seeded_random_atomics_apply_like_their_children_in_order_or_leave_the_tree_exactly_as_before() {
    const SEED: u64 = 0xA70_1C02;
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut d = Device::new();
    let (mut applied, mut rolled_back) = (0, 0);
    for round in 0..400 {
        let children: Vec<String> = (0..rng.random_range(1..6usize)).map(|k| random_child(&mut rng, k + 2)).collect();
        // The same children outside an Atomic, on a copy of the device.
        let mut plain = d.clone();
        let plain_codes: Vec<u16> = children.iter().flat_map(|c| plain.run(c)).map(|o| o.code.code()).collect();
        let before = d.snapshot();
        let out = d.run(&format!("<Atomic><CmdID>1</CmdID>{}</Atomic>", children.concat()));
        let codes: Vec<u16> = out.iter().skip(1).map(|o| o.code.code()).collect();
        let ctx = format!("seed {SEED:#x} round {round}: {children:?} -> {codes:?}");
        // The one Atomic-only rule: a Replace of a node Added earlier in the Atomic is 500.
        let target = |c: &str| c.split("<LocURI>").nth(1).and_then(|t| t.split("</LocURI>").next()).map(str::to_string);
        let mut added = Vec::new();
        let conflict = children.iter().position(|c| {
            let t = target(c);
            let hit = c.starts_with("<Replace>") && added.contains(&t);
            if c.starts_with("<Add>") {
                added.push(t);
            }
            hit
        });
        let plain_failure = plain_codes.iter().position(|&c| !(200..300).contains(&c));
        match out[0].code.code() {
            200 => {
                applied += 1;
                assert_eq!(conflict, None, "{ctx}");
                assert_eq!(codes, plain_codes, "{ctx}");
                assert_eq!(d.snapshot(), plain.snapshot(), "{ctx}");
            }
            507 => {
                rolled_back += 1;
                assert_eq!(d.snapshot(), before, "{ctx}");
                // The first failure keeps its own code; everything else reads 216.
                let first = match (plain_failure, conflict) {
                    (Some(p), Some(c)) => p.min(c),
                    (p, c) => p.or(c).expect(&ctx),
                };
                let own = if conflict == Some(first) { 500 } else { plain_codes[first] };
                assert_eq!(codes[first], own, "{ctx}");
                assert!(codes.iter().enumerate().all(|(i, &c)| i == first || c == 216), "{ctx}");
            }
            other => panic!("{ctx}: Atomic status {other}"),
        }
        // A session commits what it applied.
        d.state.commit();
    }
    assert!(applied > 40 && rolled_back > 40, "applied {applied}, rolled back {rolled_back}");
}

#[test]
fn corpus_messages_and_seeded_mutations_of_them_never_panic_the_engine() {
    const SEED: u64 = 0x7EE_2026;
    const ROUNDS: usize = 3000;
    let corpus = crate::syncml::corpus();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut executed = 0;
    for round in 0..corpus.len() + ROUNDS {
        // First every corpus file as it is, then random mutations of them.
        let (path, text) = &corpus[round % corpus.len()];
        let mut bytes = text.as_bytes().to_vec();
        if round >= corpus.len() {
            for _ in 0..rng.random_range(1..4u8) {
                crate::syncml::mutate(&mut rng, &mut bytes);
            }
        }
        let Ok(msg) = syncml::decode(&String::from_utf8_lossy(&bytes)) else { continue };
        let mut d = Device::new();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut tree = Tree::new(&d.registry, &mut d.state, &d.env);
            msg.body.commands.iter().map(|c| tree.execute(c).len()).sum::<usize>()
        }));
        match ran {
            Ok(outcomes) => executed += outcomes,
            Err(_) => panic!("seed {SEED:#x} round {round}: the engine panicked on {}", path.display()),
        }
    }
    assert!(executed > 1000, "only {executed} outcomes: the mutations hardly reached the engine");
}
