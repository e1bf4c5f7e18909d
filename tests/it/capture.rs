//! Cloning a real device: `device import` learns a template from a capture, a device made from
//! it answers every Get of the captured session with the captured value (the shipped captures
//! and a SyncMLViewer-style trace of many Gets), values marked to vary differ by seed and stay
//! the same for a seed, and `syncml replay` shows how a server's answers differ from a capture.

use std::path::{Path, PathBuf};

use mdmsim::capture::{self, Side};
use mdmsim::syncml::Command;

use super::support::refserver::RefServer;
use super::support::server::{Reply, Server, item_cmd, msg, results_of, status_of};
use super::support::{mdmsim, tree_value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A SyncMLViewer-style trace of one session of a Windows 11 laptop: separators and times
/// between the messages, the server's Gets of DevDetail and CSP leaves, one node the device does
/// not have (404), a user name, a certificate and an interior node.
const TRACE: &str = r#"SyncML Viewer trace 2025-11-04 08:15:02
--- 08:15:02.114 OMA-DM client -> server ---
<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>2A</SessionID><MsgID>1</MsgID><Target><LocURI>https://mdm.contoso.example/MDM.svc</LocURI></Target><Source><LocURI>0A1B2C3D4E5F60718293A4B5C6D7E8F9</LocURI></Source><Cred><Meta><Format xmlns="syncml:metinf">b64</Format><Type xmlns="syncml:metinf">syncml:auth-md5</Type></Meta><Data>c2VjcmV0ZGlnZXN0</Data></Cred></SyncHdr><SyncBody>
<Alert><CmdID>2</CmdID><Data>1201</Data></Alert>
<Replace><CmdID>3</CmdID>
<Item><Source><LocURI>./DevInfo/DevId</LocURI></Source><Data>0A1B2C3D4E5F60718293A4B5C6D7E8F9</Data></Item>
<Item><Source><LocURI>./DevInfo/Man</LocURI></Source><Data>LENOVO</Data></Item>
<Item><Source><LocURI>./DevInfo/Mod</LocURI></Source><Data>21HD003AUS</Data></Item>
<Item><Source><LocURI>./DevInfo/DmV</LocURI></Source><Data>1.3</Data></Item>
<Item><Source><LocURI>./DevInfo/Lang</LocURI></Source><Data>de-DE</Data></Item>
</Replace><Final/></SyncBody></SyncML>
--- 08:15:02.390 server -> OMA-DM client ---
<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>2A</SessionID><MsgID>1</MsgID><Target><LocURI>0A1B2C3D4E5F60718293A4B5C6D7E8F9</LocURI></Target><Source><LocURI>https://mdm.contoso.example/MDM.svc</LocURI></Source></SyncHdr><SyncBody>
<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>212</Data></Status>
<Get><CmdID>10</CmdID><Item><Target><LocURI>./DevDetail/SwV</LocURI></Target></Item></Get>
<Get><CmdID>11</CmdID><Item><Target><LocURI>./DevDetail/OEM</LocURI></Target></Item><Item><Target><LocURI>./DevDetail/FwV</LocURI></Target></Item></Get>
<Get><CmdID>12</CmdID><Item><Target><LocURI>./DevDetail/Ext/Microsoft/DeviceName</LocURI></Target></Item></Get>
<Get><CmdID>13</CmdID><Item><Target><LocURI>./DevDetail/Ext/Microsoft/SMBIOSSerialNumber</LocURI></Target></Item></Get>
<Get><CmdID>14</CmdID><Item><Target><LocURI>./DevDetail/Ext/Microsoft/TotalStorage</LocURI></Target></Item></Get>
<Get><CmdID>15</CmdID><Item><Target><LocURI>./DevDetail/Ext/Microsoft/TotalRAM</LocURI></Target></Item></Get>
<Get><CmdID>16</CmdID><Item><Target><LocURI>./Vendor/MSFT/DeviceStatus/OS/Edition</LocURI></Target></Item></Get>
<Get><CmdID>17</CmdID><Item><Target><LocURI>./Vendor/MSFT/DeviceStatus/TPM/SpecificationVersion</LocURI></Target></Item></Get>
<Get><CmdID>18</CmdID><Item><Target><LocURI>./Vendor/MSFT/DeviceStatus/DomainName</LocURI></Target></Item></Get>
<Get><CmdID>19</CmdID><Item><Target><LocURI>./Vendor/MSFT/WindowsLicensing/Edition</LocURI></Target></Item></Get>
<Get><CmdID>20</CmdID><Item><Target><LocURI>./DevInfo/DevId</LocURI></Target></Item></Get>
<Get><CmdID>21</CmdID><Item><Target><LocURI>./Vendor/MSFT/RootCATrustedCertificates/Root/D9A88E04AF18A4D399CEE62F2C71469C3AE1E675/EncodedCertificate</LocURI></Target></Item></Get>
<Get><CmdID>22</CmdID><Item><Target><LocURI>./Vendor/MSFT/DeviceStatus/Antivirus</LocURI></Target></Item></Get>
<Final/></SyncBody></SyncML>
--- 08:15:03.021 OMA-DM client -> server ---
<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>2A</SessionID><MsgID>2</MsgID><Target><LocURI>https://mdm.contoso.example/MDM.svc</LocURI></Target><Source><LocURI>0A1B2C3D4E5F60718293A4B5C6D7E8F9</LocURI></Source></SyncHdr><SyncBody>
<Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>
<Status><CmdID>2</CmdID><MsgRef>1</MsgRef><CmdRef>10</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>3</CmdID><MsgRef>1</MsgRef><CmdRef>10</CmdRef><Item><Source><LocURI>./DevDetail/SwV</LocURI></Source><Meta><Format xmlns="syncml:metinf">chr</Format></Meta><Data>10.0.22631.4460</Data></Item></Results>
<Status><CmdID>4</CmdID><MsgRef>1</MsgRef><CmdRef>11</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>5</CmdID><MsgRef>1</MsgRef><CmdRef>11</CmdRef><Item><Source><LocURI>./DevDetail/OEM</LocURI></Source><Data>LENOVO</Data></Item><Item><Source><LocURI>./DevDetail/FwV</LocURI></Source><Data>R23ET70W (1.46 )</Data></Item></Results>
<Status><CmdID>6</CmdID><MsgRef>1</MsgRef><CmdRef>12</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>7</CmdID><MsgRef>1</MsgRef><CmdRef>12</CmdRef><Item><Source><LocURI>./DevDetail/Ext/Microsoft/DeviceName</LocURI></Source><Data>LAPTOP-J4K8Q2NV</Data></Item></Results>
<Status><CmdID>8</CmdID><MsgRef>1</MsgRef><CmdRef>13</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>9</CmdID><MsgRef>1</MsgRef><CmdRef>13</CmdRef><Item><Source><LocURI>./DevDetail/Ext/Microsoft/SMBIOSSerialNumber</LocURI></Source><Data>PF4ABC12</Data></Item></Results>
<Status><CmdID>10</CmdID><MsgRef>1</MsgRef><CmdRef>14</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>11</CmdID><MsgRef>1</MsgRef><CmdRef>14</CmdRef><Item><Source><LocURI>./DevDetail/Ext/Microsoft/TotalStorage</LocURI></Source><Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>486188</Data></Item></Results>
<Status><CmdID>12</CmdID><MsgRef>1</MsgRef><CmdRef>15</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>13</CmdID><MsgRef>1</MsgRef><CmdRef>15</CmdRef><Item><Source><LocURI>./DevDetail/Ext/Microsoft/TotalRAM</LocURI></Source><Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>32768</Data></Item></Results>
<Status><CmdID>14</CmdID><MsgRef>1</MsgRef><CmdRef>16</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>15</CmdID><MsgRef>1</MsgRef><CmdRef>16</CmdRef><Item><Source><LocURI>./Vendor/MSFT/DeviceStatus/OS/Edition</LocURI></Source><Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>4</Data></Item></Results>
<Status><CmdID>16</CmdID><MsgRef>1</MsgRef><CmdRef>17</CmdRef><Cmd>Get</Cmd><Data>404</Data></Status>
<Status><CmdID>17</CmdID><MsgRef>1</MsgRef><CmdRef>18</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>18</CmdID><MsgRef>1</MsgRef><CmdRef>18</CmdRef><Item><Source><LocURI>./Vendor/MSFT/DeviceStatus/DomainName</LocURI></Source><Data>jane.doe@contoso.com</Data></Item></Results>
<Status><CmdID>19</CmdID><MsgRef>1</MsgRef><CmdRef>19</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>20</CmdID><MsgRef>1</MsgRef><CmdRef>19</CmdRef><Item><Source><LocURI>./Vendor/MSFT/WindowsLicensing/Edition</LocURI></Source><Meta><Format xmlns="syncml:metinf">int</Format></Meta><Data>4</Data></Item></Results>
<Status><CmdID>21</CmdID><MsgRef>1</MsgRef><CmdRef>20</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>22</CmdID><MsgRef>1</MsgRef><CmdRef>20</CmdRef><Item><Source><LocURI>./DevInfo/DevId</LocURI></Source><Data>0A1B2C3D4E5F60718293A4B5C6D7E8F9</Data></Item></Results>
<Status><CmdID>23</CmdID><MsgRef>1</MsgRef><CmdRef>21</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>26</CmdID><MsgRef>1</MsgRef><CmdRef>21</CmdRef><Item><Source><LocURI>./Vendor/MSFT/RootCATrustedCertificates/Root/D9A88E04AF18A4D399CEE62F2C71469C3AE1E675/EncodedCertificate</LocURI></Source><Data>MIIFTjCCAzagAwIBAgIUAMlBBDb56mFFUZOh35MmPTuV6JcwDQYJKoZIhvcNAQELBQAwPzEZMBcGA1UECgwQTWF0dHJheCBJZGVudGl0eTEiMCAGA1UEAwwZV2luZG93cyBNRE0gRGVtbyBJZGVudGl0eTAeFw0yMTAxMDMwMjQ0MDJa</Data></Item></Results>
<Status><CmdID>24</CmdID><MsgRef>1</MsgRef><CmdRef>22</CmdRef><Cmd>Get</Cmd><Data>200</Data></Status>
<Results><CmdID>25</CmdID><MsgRef>1</MsgRef><CmdRef>22</CmdRef><Item><Source><LocURI>./Vendor/MSFT/DeviceStatus/Antivirus</LocURI></Source><Meta><Format xmlns="syncml:metinf">node</Format></Meta><Data>SignatureStatus/Status</Data></Item></Results>
<Final/></SyncBody></SyncML>
--- 08:15:03.300 server -> OMA-DM client (empty body: end of session) ---
"#;

/// What the captured device answered to each server Get, paired here (not by the importer):
/// (Get CmdID, LocURI, captured status, captured Results data).
fn captured_gets(cap: &capture::Capture) -> Vec<(String, String, String, Option<String>)> {
    let mut out = Vec::new();
    for (i, m) in cap.messages.iter().enumerate() {
        if m.side != Side::Server {
            continue;
        }
        let answer = cap.messages[i + 1..].iter().find(|x| x.side == Side::Client);
        for c in &m.msg.body.commands {
            let Command::Get(g) = c else { continue };
            let answer = answer.expect("the device answered the Gets");
            let status = answer
                .msg
                .body
                .commands
                .iter()
                .find_map(|x| match x {
                    Command::Status(st) if st.cmd_ref == g.cmd_id => Some(st.data.clone()),
                    _ => None,
                })
                .expect("a Status for every Get");
            for (n, item) in g.items.iter().enumerate() {
                let data = answer.msg.body.commands.iter().find_map(|x| match x {
                    Command::Results(r) if r.cmd_ref == g.cmd_id => r.items.get(n).and_then(|it| it.data.clone()),
                    _ => None,
                });
                out.push((g.cmd_id.clone(), item.target.clone().unwrap_or_default(), status.clone(), data));
            }
        }
    }
    out
}

/// `device import` of `capture` into `dir/name.toml` with `extra` options; gives the template
/// path and the report printed.
fn import(capture: &Path, dir: &Path, name: &str, extra: &[&str]) -> (PathBuf, String) {
    let template = dir.join(format!("{name}.toml"));
    let mut args = vec!["device", "import"];
    let (cap, out) = (s(capture), s(&template));
    args.push(&cap);
    args.extend_from_slice(&["-o", &out]);
    args.extend_from_slice(extra);
    let (code, stdout, err) = mdmsim(&args);
    assert_eq!(code, 0, "device import {cap}: {err}\n{stdout}");
    (template, stdout)
}

/// Creates a device from `template` (with the captured DeviceID when it is one), has a scripted
/// server send every captured Get in one message, and gives the device's answer.
fn device_answers(
    dir: &Path,
    template: &Path,
    id: Option<&str>,
    gets: &[(String, String, String, Option<String>)],
) -> mdmsim::syncml::SyncMl {
    let mut commands: Vec<Command> = Vec::new();
    for (cmd_id, uri, _, _) in gets {
        // One command per LocURI, so that each gets its own Status.
        let id = format!("{cmd_id}-{}", commands.len());
        commands.push(Command::Get(item_cmd(&id, uri, None, None)));
    }
    let server = Server::start(vec![Reply::Syncml(msg(commands)), Reply::Empty]);
    let state = dir.join(format!("state-{}", template.file_stem().unwrap().to_string_lossy()));
    let (st, t) = (s(&state), s(template));
    let mut args = vec!["device", "new", "--state", &st, "--server", &server.url, "--template", &t];
    match id {
        Some(id) => args.extend_from_slice(&["--id", id]),
        None => args.extend_from_slice(&["--seed", "1"]),
    }
    let (code, _, err) = mdmsim(&args);
    assert_eq!(code, 0, "device new: {err}");
    let (code, out, err) = mdmsim(&["sync", "--state", &s(&state), "--timeout", "10"]);
    assert_eq!(code, 0, "sync: {err}\n{out}");
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "package 1 and the answer to the Gets");
    requests[1].syncml()
}

/// Asserts that the device answered every captured Get as captured: the same Results data for a
/// 200 with data, the same status otherwise; `except` maps LocURIs to the value the template
/// says instead (masked values).
fn assert_every_get_answered_as_captured(
    answer: &mdmsim::syncml::SyncMl,
    gets: &[(String, String, String, Option<String>)],
    except: &[(&str, &str)],
) {
    assert!(!gets.is_empty());
    for (n, (cmd_id, uri, status, data)) in gets.iter().enumerate() {
        let id = format!("{cmd_id}-{n}");
        let got_status = status_of(answer, &id).unwrap_or_else(|| panic!("no Status for the Get of {uri}"));
        let want = except.iter().find(|(u, _)| u == uri).map(|(_, v)| v.to_string());
        match (status.as_str(), data, want) {
            (_, _, Some(masked)) => {
                assert_eq!(got_status, "200", "{uri}");
                assert_eq!(results_of(answer, &id).as_deref(), Some(masked.as_str()), "{uri}: the masked value");
            }
            ("200", Some(value), None) => {
                assert_eq!(got_status, "200", "{uri}");
                assert_eq!(results_of(answer, &id).as_deref(), Some(value.as_str()), "{uri}");
            }
            (code, _, None) => assert_eq!(got_status, code, "{uri}: the captured status"),
        }
    }
}

#[test]
fn a_device_made_from_each_shipped_capture_answers_every_captured_get_as_captured() {
    let dir = tempfile::tempdir().unwrap();
    // MS-MDM section 4: two Gets with their Results.
    let ms = root().join("fixtures/captures/ms-mdm-example");
    let cap = capture::read(std::slice::from_ref(&ms)).unwrap();
    let gets = captured_gets(&cap);
    assert_eq!(gets.len(), 2);
    let (template, report) = import(&ms, dir.path(), "ms", &["--no-vary"]);
    assert!(report.contains("checked: a device made from the template answers 2 of 2 captured Gets"), "{report}");
    let answer = device_answers(dir.path(), &template, None, &gets);
    assert_every_get_answered_as_captured(&answer, &gets, &[]);

    // The fleetdm capture has no Get: what its device said is package 1's DevInfo and the
    // enrollment context; Gets of each of those nodes get the captured values back.
    let fleet = root().join("fixtures/captures/fleetdm-win10-19043.txt");
    let (template, report) = import(&fleet, dir.path(), "fleet", &["--no-vary"]);
    assert!(report.contains("profile win10 (DevDetail SwV 10.0.19043.2364"), "{report}");
    assert!(report.contains("OS build 19043.2364"), "{report}");
    let said: Vec<(String, String, String, Option<String>)> = [
        ("./DevInfo/DevId", "1E08C6E95D8BB843B1278FF45BC60CC6"),
        ("./DevInfo/Man", "VMware, Inc."),
        ("./DevInfo/Mod", "VMware7,1"),
        ("./DevInfo/DmV", "1.3"),
        ("./DevInfo/Lang", "en-US"),
        ("./DevDetail/SwV", "10.0.19043.2364"),
        ("./DevDetail/Ext/Microsoft/OSEdition", "72"),
        ("./DevDetail/Ext/Microsoft/DeviceName", "DESKTOP-28FGAI6"),
    ]
    .iter()
    .map(|(u, v)| ("9".to_string(), u.to_string(), "200".to_string(), Some(v.to_string())))
    .collect();
    let answer = device_answers(dir.path(), &template, Some("1E08C6E95D8BB843B1278FF45BC60CC6"), &said);
    assert_every_get_answered_as_captured(&answer, &said, &[]);

    // The shipped templates are what the import writes (with variation), under a header naming
    // their public source.
    let body = |text: &str| -> String {
        let from = text.find("# A device template learnt").expect("the import's header");
        text[from..].lines().filter(|l| !l.starts_with("# Capture: ")).collect::<Vec<_>>().join("\n")
    };
    for (capture, shipped) in [(&ms, "ms-mdm-example.toml"), (&fleet, "fleetdm-win10-19043.toml")] {
        let text = std::fs::read_to_string(root().join("fixtures/templates").join(shipped)).unwrap();
        assert!(text.starts_with("# Provenance: "), "{shipped} names its source");
        let (now, _) = import(capture, dir.path(), &format!("again-{shipped}"), &[]);
        assert_eq!(body(&text), body(&std::fs::read_to_string(now).unwrap()), "{shipped} is the import of its capture");
        let t = mdmsim::device::Template::parse(&text, shipped).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.profile, Some(mdmsim::tree::Profile::Win10));
    }
}

#[test]
fn a_trace_with_many_gets_is_cloned_value_for_value_and_what_is_secret_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("syncmlviewer.txt");
    std::fs::write(&trace, TRACE).unwrap();
    let cap = capture::read(std::slice::from_ref(&trace)).unwrap();
    let gets = captured_gets(&cap);
    assert_eq!(gets.len(), 14);
    let (template, report) = import(&trace, dir.path(), "exact", &["--no-vary"]);
    let text = std::fs::read_to_string(&template).unwrap();
    // Secrets and user names never reach the template; the report says what became of them.
    for secret in ["jane.doe", "c2VjcmV0ZGlnZXN0", "AAuthSecret"] {
        assert!(!text.contains(secret), "{secret} in\n{text}");
    }
    assert!(report.contains("SyncHdr Cred"), "{report}");
    assert!(report.contains("./Vendor/MSFT/DeviceStatus/DomainName = \"user"), "{report}");
    assert!(report.contains("(a user name (UPN or email) replaced)"), "{report}");
    assert!(
        report.contains("./Vendor/MSFT/DeviceStatus/Antivirus = \"SignatureStatus/Status\"  (an interior node"),
        "{report}"
    );
    assert!(
        report.contains("unsupported (answered 404) (1):\n  ./Vendor/MSFT/DeviceStatus/TPM/SpecificationVersion"),
        "{report}"
    );
    assert!(report.contains("DeviceID 0A1B2C3D4E5F60718293A4B5C6D7E8F9"), "{report}");
    let t = mdmsim::device::Template::parse(&text, "exact.toml").unwrap();
    let masked = t.nodes["./Vendor/MSFT/DeviceStatus/DomainName"][0].clone();
    assert!(masked.ends_with("@contoso.example"), "{masked}");

    // Every Get of the session, answered by a device made from the template: the captured
    // value, the captured 404, and, by design, for the user name its stand-in, for the dropped
    // certificate a 404 (the device has none), for the interior node its own listing.
    let answer = device_answers(dir.path(), &template, Some("0A1B2C3D4E5F60718293A4B5C6D7E8F9"), &gets);
    let cert =
        "./Vendor/MSFT/RootCATrustedCertificates/Root/D9A88E04AF18A4D399CEE62F2C71469C3AE1E675/EncodedCertificate";
    assert!(!text.contains("MIIFTjCC") && !text.contains("D9A88E04"), "{text}");
    assert!(report.contains("(a certificate or key blob: never kept)"), "{report}");
    let mut checked = 0;
    for (n, (cmd_id, uri, status, data)) in gets.iter().enumerate() {
        let id = format!("{cmd_id}-{n}");
        let got = status_of(&answer, &id).unwrap_or_else(|| panic!("no Status for the Get of {uri}"));
        let results = results_of(&answer, &id);
        match uri.as_str() {
            "./Vendor/MSFT/DeviceStatus/DomainName" => assert_eq!(results.as_deref(), Some(masked.as_str())),
            u if u == cert => assert_eq!(got, "404", "the certificate was not kept"),
            u if u.ends_with("/Antivirus") => assert_eq!(got, "200", "an interior node lists its children"),
            _ if status == "200" => {
                assert_eq!(got, "200", "{uri}");
                assert_eq!(&results, data, "{uri}");
                checked += 1;
            }
            _ => {
                assert_eq!(&got, status, "{uri}: the captured status");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 11, "every other Get answered exactly as captured");
    assert!(report.contains("answers 11 of 11 captured Gets as captured"), "{report}");

    // Imported with variation: the serial, host name and disk size vary by seed, the rest is
    // as captured; the report and the template say which.
    let (varied, report) = import(&trace, dir.path(), "varied", &[]);
    let vtext = std::fs::read_to_string(&varied).unwrap();
    assert!(vtext.contains("\"Ext/Microsoft/DeviceName\" = \"LAPTOP-{alnum:8}\""), "{vtext}");
    assert!(vtext.contains("SMBIOSSerialNumber\" = \"{alnum:8}\""), "{vtext}");
    assert!(vtext.contains("TotalStorage\" = \"{int:243094..729282}\""), "{vtext}");
    assert!(report.contains("varied across a fleet (3):"), "{report}");
    let mut names = Vec::new();
    for seed in ["1", "1", "2"] {
        let state = dir.path().join(format!("fleet-{seed}-{}", names.len()));
        let (code, _, err) = mdmsim(&[
            "device",
            "new",
            "--state",
            &s(&state),
            "--server",
            "http://127.0.0.1:9/x",
            "--seed",
            seed,
            "--template",
            &s(&varied),
        ]);
        assert_eq!(code, 0, "{err}");
        let name = tree_value(&state, "./DevDetail/Ext/Microsoft/DeviceName");
        let serial = tree_value(&state, "./DevDetail/Ext/Microsoft/SMBIOSSerialNumber");
        let storage: i64 = tree_value(&state, "./DevDetail/Ext/Microsoft/TotalStorage").parse().unwrap();
        assert!(name.starts_with("LAPTOP-") && name.len() == 15, "{name}");
        assert!(serial.len() == 8 && serial.chars().all(|c| c.is_ascii_alphanumeric()), "{serial}");
        assert!((243094..=729282).contains(&storage), "{storage}");
        assert_eq!(tree_value(&state, "./DevDetail/FwV"), "R23ET70W (1.46 )");
        names.push((name, serial, storage));
    }
    assert_eq!(names[0], names[1], "the same seed gives the same values");
    assert_ne!(names[0].0, names[2].0, "another seed, another host name");
    assert_ne!(names[0].1, names[2].1, "another seed, another serial");
}

#[test]
fn patterns_vary_by_seed_in_every_table_and_a_bad_one_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("fleet.toml");
    std::fs::write(
        &t,
        "[devinfo]\nMod = \"Model {alnum:4}\"\n[devdetail]\nHwV = \"{date:2023-01-01..2025-12-31}\"\n\
         [devdetail.Ext.Microsoft]\nDeviceName = \"DESKTOP-{alnum:7}\"\nDNSComputerName = \"DESKTOP-{alnum:7}\"\n\
         TotalStorage = \"{int:128000..512000}\"\n[nodes]\n\"./Vendor/MSFT/DeviceStatus/DomainName\" = [\"{hex:12}\"]\n",
    )
    .unwrap();
    let values = |seed: &str, n: usize| {
        let state = dir.path().join(format!("s{seed}-{n}"));
        let (code, _, err) = mdmsim(&[
            "device",
            "new",
            "--state",
            &s(&state),
            "--server",
            "http://127.0.0.1:9/x",
            "--seed",
            seed,
            "--template",
            &s(&t),
        ]);
        assert_eq!(code, 0, "{err}");
        [
            "./DevInfo/Mod",
            "./DevDetail/HwV",
            "./DevDetail/Ext/Microsoft/DeviceName",
            "./DevDetail/Ext/Microsoft/DNSComputerName",
            "./DevDetail/Ext/Microsoft/TotalStorage",
            "./Vendor/MSFT/DeviceStatus/DomainName",
        ]
        .map(|u| tree_value(&state, u))
    };
    let (a, a2, b) = (values("7", 0), values("7", 1), values("8", 2));
    assert_eq!(a, a2, "the same seed, the same values");
    for i in [0, 1, 2, 5] {
        assert_ne!(a[i], b[i], "another seed varies value {i}");
    }
    assert_eq!(a[2], a[3], "the same pattern text agrees within a device");
    assert!(a[1].len() == 10 && a[1].starts_with("202"), "{}", a[1]);
    assert!(a[5].len() == 12 && a[5].chars().all(|c| c.is_ascii_hexdigit()), "{}", a[5]);

    for (text, place, words) in [
        (
            "[devdetail.Ext.Microsoft]\nDeviceName = \"PC-{alnm:7}\"\n",
            "2:18",
            "unknown kind `alnm` (did you mean `alnum`?)",
        ),
        (
            "[devdetail.Ext.Microsoft]\nTotalRAM = \"{hex:4}\"\n",
            "2:12",
            "only {int:A..B} and {digits:N} patterns vary it",
        ),
        ("[nodes]\n\"./Vendor/MSFT/DeviceStatus/DomainName\" = [\"a\", \"{int:9..1}\"]\n", "2:50", "is an empty range"),
        ("unsupported = [\"DeviceStatus\"]\n", "1:16", "expected an absolute LocURI"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let state = dir.path().join("bad-state");
        let (code, _, err) = mdmsim(&[
            "device",
            "new",
            "--state",
            &s(&state),
            "--server",
            "http://127.0.0.1:9/x",
            "--seed",
            "1",
            "--template",
            &s(&bad),
        ]);
        assert_eq!(code, 2, "{text}: {err}");
        let prefix = format!("mdmsim: {}:{place}: ", bad.display());
        assert!(err.starts_with(&prefix), "{text}: {err:?} should start with {prefix:?}");
        assert!(err.contains(words), "{text}: {err}");
        assert!(!state.exists(), "nothing is created");
    }
}

#[test]
fn import_refuses_what_is_not_a_capture_with_the_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.toml");
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "trace\n<SyncML xmlns=\"SYNCML:SYNCML1.2\"><SyncHdr><Nope/></SyncHdr></SyncML>\n").unwrap();
    let (code, _, err) = mdmsim(&["device", "import", &s(&bad), "-o", &s(&out)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with(&format!("mdmsim: {}:2:", bad.display())), "{err}");
    let empty = dir.path().join("notes.txt");
    std::fs::write(&empty, "no messages here").unwrap();
    let (code, _, err) = mdmsim(&["device", "import", &s(&empty), "-o", &s(&out)]);
    assert_eq!(code, 2);
    assert!(err.contains("no SyncML message"), "{err}");
    let (code, _, _) = mdmsim(&["device", "import", &s(&dir.path().join("missing.xml")), "-o", &s(&out)]);
    assert_eq!(code, 2);
    // Bounded: a file over 64 MiB is refused before it is read whole.
    let big = dir.path().join("huge.txt");
    std::fs::File::create(&big).unwrap().set_len((64 << 20) + 1).unwrap();
    let (code, _, err) = mdmsim(&["device", "import", &s(&big), "-o", &s(&out)]);
    assert_eq!(code, 2);
    assert!(err.contains("huge.txt: larger than 64 MiB"), "{err}");
    assert!(!out.exists(), "no template is written for a bad capture");
    let good = s(&root().join("fixtures/captures/fleetdm-win10-19043.txt"));
    let (code, _, err) = mdmsim(&["device", "import", &good, "-o", &s(&dir.path().join("no/such/t.toml"))]);
    assert_eq!(code, 2);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn replay_against_the_reference_server_reports_what_it_answers_differently() {
    let srv = RefServer::start();
    let capture = s(&root().join("fixtures/captures/fleetdm-win10-19043.txt"));
    let url = srv.management_url();
    let (code, out, err) = mdmsim(&["syncml", "replay", &capture, "--server", &url]);
    assert_eq!(code, 1, "differences exit 1: {err}\n{out}");
    // The demo server's Personalization Replaces are not what the reference server sends...
    assert!(
        out.contains(
            "- session 1 message 1: Replace ./Vendor/MSFT/Personalization/DesktopImageUrl: in the capture, not sent now"
        ),
        "{out}"
    );
    // ...which asks for DevDetail values instead, answered 404 for want of a captured answer.
    assert!(out.contains("+ session 1 message 1: Get ./DevDetail/SwV: sent now, not in the capture"), "{out}");
    assert!(out.contains("no captured answer to Get ./DevDetail/SwV: answered 404"), "{out}");
    assert!(out.contains(" difference(s)"), "{out}");

    let (code, out, err) = mdmsim(&["syncml", "replay", &capture, "--server", &url, "--json"]);
    assert_eq!(code, 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["same"], false);
    assert_eq!(v["device_id"], "1E08C6E95D8BB843B1278FF45BC60CC6");
    let diffs = v["differences"].as_array().unwrap();
    assert!(diffs.iter().any(|d| d["change"] == "removed"
        && d["command"] == "Replace"
        && d["target"] == "./Vendor/MSFT/Personalization/LockScreenImageUrl"));
    assert!(diffs.iter().any(|d| d["change"] == "added" && d["command"] == "Get"));

    // Nobody listening: exit 3.
    let (code, _, err) =
        mdmsim(&["syncml", "replay", &capture, "--server", "http://127.0.0.1:9/MDM.svc", "--timeout", "5"]);
    assert_eq!(code, 3, "{err}");
}

#[test]
fn replay_against_a_server_answering_as_captured_is_the_same_and_answers_from_the_capture() {
    let url = "https://fleetdm.com/images/articles/fleet-4.24.0-cover-1600x900@2x.jpg";
    let replace = |id: &str, node: &str| {
        Command::Replace(item_cmd(id, &format!("./Vendor/MSFT/Personalization/{node}"), Some(url), Some("chr")))
    };
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![replace("5", "DesktopImageUrl"), replace("6", "LockScreenImageUrl")])),
        Reply::Empty,
    ]);
    let capture = s(&root().join("fixtures/captures/fleetdm-win10-19043.txt"));
    let (code, out, err) = mdmsim(&["syncml", "replay", &capture, "--server", &server.url]);
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(out.contains("same: the server answered as in the capture"), "{out}");
    let sent = server.device_messages();
    assert_eq!(sent.len(), 2);
    // Package 1 as captured, with the captured DeviceID.
    assert_eq!(sent[0].hdr.source, "1E08C6E95D8BB843B1278FF45BC60CC6");
    assert_eq!(sent[0].body.commands.len(), 3);
    // The captured 202s, renumbered to what the server sent now.
    assert_eq!(status_of(&sent[1], "5").as_deref(), Some("202"));
    assert_eq!(status_of(&sent[1], "6").as_deref(), Some("202"));
    assert_eq!(sent[1].hdr.msg_id, "2");
}
