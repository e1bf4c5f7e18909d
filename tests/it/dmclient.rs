//! The the DMClient CSP page's examples, replayed as server messages (SyncML text) against the
//! registry every device uses, asserting the statuses and the values read back.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use mdmsim::csp::{self, dmclient};
use mdmsim::syncml;
use mdmsim::tree::{CmdOutcome, Effect, Env, Profile, Settings, Tree, TreeState};

struct Device {
    state: TreeState,
    env: Env,
    effects: Vec<Effect>,
}

impl Device {
    fn enrolled(settings: &[(&str, &str)]) -> Device {
        let mut env = Env::new(Utc.with_ymd_and_hms(2026, 5, 4, 8, 0, 0).unwrap(), Profile::Win10);
        env.settings = Arc::new(Settings(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
        let mut state = TreeState::new();
        state.set_value("DevInfo/DevId", "1E08C6E95D8BB843B1278FF45BC60CC6");
        dmclient::create_provider(&mut state, "MS DM Server", &env.settings);
        Device { state, env, effects: Vec::new() }
    }

    /// Runs the commands of a server message body; returns (CmdID, status, first Results data).
    fn send(&mut self, body: &str) -> Vec<(String, u16, Option<String>)> {
        let text = format!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>
<SessionID>10</SessionID><MsgID>2</MsgID><Target><LocURI>1E08C6E95D8BB843B1278FF45BC60CC6</LocURI></Target>
<Source><LocURI>https://www.contoso.com/mgmt-server</LocURI></Source></SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"#
        );
        let msg = syncml::decode(&text).expect("server message decodes");
        let registry = csp::registry();
        let mut tree = Tree::new(&registry, &mut self.state, &self.env);
        let out: Vec<CmdOutcome> = msg.body.commands.iter().flat_map(|c| tree.execute(c)).collect();
        self.effects.extend(tree.effects);
        out.into_iter().map(|o| (o.cmd_id, o.code.code(), o.results.first().and_then(|i| i.data.clone()))).collect()
    }
}

fn get(id: u32, uri: &str) -> String {
    format!("<Get><CmdID>{id}</CmdID><Item><Target><LocURI>{uri}</LocURI></Target></Item></Get>")
}

fn replace(id: u32, uri: &str, data: &str) -> String {
    format!(
        "<Replace><CmdID>{id}</CmdID><Item><Target><LocURI>{uri}</LocURI></Target><Data>{data}</Data></Item></Replace>"
    )
}

const PROVIDER: &str = "./Vendor/MSFT/DMClient/Provider/MS%20DM%20Server";

#[test]
fn exchange_id_get_is_not_found_until_email_is_set_up() {
    let mut d = Device::enrolled(&[]);
    let out = d.send(&get(12, &format!("{PROVIDER}/ExchangeID")));
    assert_eq!(out, [("12".to_string(), 404, None)]);
}

#[test]
fn csp_page_poll_tables_replayed_as_server_messages() {
    let names = dmclient::POLL_VALUES.map(|(n, _)| n);
    // (set by the server, actual value queried on device, device template settings)
    type Table = ([u32; 6], [u32; 6], &'static [(&'static str, &'static str)]);
    let tables: [Table; 4] = [
        ([15, 5, 60, 10, 1440, 0], [15, 5, 60, 10, 1440, 0], &[]),
        ([15, 5, 60, 10, 0, 0], [15, 5, 60, 10, 0, 0], &[]),
        ([0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], &[("poll_all_zero", "accept")]),
        ([15, 5, 1440, 0, 1440, 0], [15, 5, 1440, 0, 0, 0], &[]),
    ];
    for (set, actual, settings) in tables {
        let mut d = Device::enrolled(settings);
        let mut body = String::new();
        for (i, (name, v)) in names.iter().zip(set).enumerate() {
            body.push_str(&replace(
                i as u32 + 1,
                &format!("./Device/Vendor/MSFT/DMClient/Provider/MS%20DM%20Server/Poll/{name}"),
                &v.to_string(),
            ));
        }
        for (i, name) in names.iter().enumerate() {
            body.push_str(&get(i as u32 + 10, &format!("{PROVIDER}/Poll/{name}")));
        }
        let out = d.send(&body);
        assert!(out[..6].iter().all(|o| o.1 == 200), "{set:?}: {out:?}");
        let read: Vec<u32> = out[6..].iter().map(|o| o.2.as_deref().unwrap().parse().unwrap()).collect();
        assert_eq!(read, actual, "set by the server {set:?}");
    }
}

#[test]
fn all_zero_poll_configuration_is_a_configuration_failure_by_default() {
    let mut d = Device::enrolled(&[]);
    let mut body = String::new();
    for (i, (name, _)) in dmclient::POLL_VALUES.iter().enumerate() {
        body.push_str(&replace(i as u32 + 1, &format!("{PROVIDER}/Poll/{name}"), "0"));
    }
    let codes: Vec<u16> = d.send(&body).iter().map(|o| o.1).collect();
    assert_eq!(codes, [200, 500, 200, 200, 200, 200]);
    assert_eq!(dmclient::poll_config(&d.state, "MS DM Server").unwrap().values(), [0, 10, 0, 0, 0, 0]);
}

#[test]
fn management_server_address_list_example_then_unenroll_example() {
    let mut d = Device::enrolled(&[]);
    let out = d.send(
        r#"<Replace><CmdID>101</CmdID><Item><Target><LocURI>
              ./Vendor/MSFT/DMClient/Provider/MS%20DM%20Server/ManagementServerAddressList
           </LocURI></Target><Data>&lt;https://server1&gt;&lt;https:// server2&gt; </Data></Item></Replace>
           <Exec><CmdID>2</CmdID><Item><Target><LocURI>./Vendor/MSFT/DMClient/Provider/MS%20DM%20Server/Unenroll</LocURI></Target>
           <Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>TestMDMServer</Data></Item></Exec>"#,
    );
    assert_eq!(out.iter().map(|o| o.1).collect::<Vec<_>>(), [200, 200]);
    let list = dmclient::server_addresses(&d.state, "MS DM Server").unwrap();
    assert_eq!(list.order(None), ["https://server1", "https://server2"]);
    assert!(matches!(&d.effects[..], [Effect::Unenroll { .. }]));
}

#[test]
fn push_pfn_then_channel_from_the_fake_wns() {
    let mut d = Device::enrolled(&[("push_endpoint", "http://127.0.0.1:9/wns")]);
    let out = d.send(&format!(
        "{}{}{}",
        replace(1, &format!("{PROVIDER}/Push/PFN"), "Contoso.MDM_8wekyb3d8bbwe"),
        get(2, &format!("{PROVIDER}/Push/ChannelURI")),
        get(3, &format!("{PROVIDER}/Push/Status")),
    ));
    assert_eq!(out[0].1, 200);
    assert_eq!(out[1].2.as_deref(), Some("http://127.0.0.1:9/wns/1E08C6E95D8BB843B1278FF45BC60CC6/MS%20DM%20Server"));
    assert_eq!(out[2].2.as_deref(), Some("0"));
}
