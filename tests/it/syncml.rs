//! The SyncML codec against the golden corpus in `fixtures/syncml/` : every
//! file decodes and round-trips, every truncated prefix is refused, malformed files give errors
//! that name the element and the right line and column, the `mdmsim syncml` commands work on the
//! same files, and seeded random mutations never panic the decoder.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use mdmsim::syncml::{Command, DecodeError, SyncMl, decode, encode, line_col, pretty};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/syncml")
}

/// Every `*.xml` file directly in `dir`, sorted, with its text.
fn xml_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, text)
        })
        .collect()
}

pub(crate) fn corpus() -> Vec<(PathBuf, String)> {
    let files = xml_files(&corpus_dir());
    // Guard against a test that passes because the folder is empty or misplaced.
    assert!(files.len() >= 25, "the golden corpus has only {} files", files.len());
    files
}

fn name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn decode_file(file: &str) -> SyncMl {
    let text = std::fs::read_to_string(corpus_dir().join(file)).expect(file);
    decode(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn every_corpus_file_decodes_and_round_trips_stably() {
    for (path, text) in corpus() {
        let file = name(&path);
        let first = decode(&text).unwrap_or_else(|e| {
            let (l, c) = line_col(&text, e.offset());
            panic!("{file}:{l}:{c}: {e}")
        });
        let wire = encode(&first);
        let second = decode(&wire).unwrap_or_else(|e| panic!("{file}: our own encoding does not decode: {e}\n{wire}"));
        assert_eq!(second, first, "{file}: decode(encode(m)) != m");
        assert_eq!(encode(&second), wire, "{file}: encode is not stable on the second round");
        // The pretty form is for people, but it must still be SyncML with the same commands.
        let shown = decode(&pretty(&first)).unwrap_or_else(|e| panic!("{file}: pretty output does not decode: {e}"));
        assert_eq!(shown.body.commands.len(), first.body.commands.len(), "{file}");
    }
}

#[test]
fn corpus_covers_the_seeds_and_the_server_shapes_the_issue_names() {
    let names: Vec<String> = corpus().iter().map(|(p, _)| name(p)).collect();
    for must in [
        "seed-dmclient-requestpending-alert.xml",
        "seed-eam-atomic-download-install.xml",
        "seed-eam-results-inventory-structdata.xml",
        "fleet-msi-install.xml",
        "fleet-msi-install-cdata.xml",
        "fleet-profile-atomic.xml",
        "intune-nodecache-gets.xml",
        "server-multi-message-1222-part1.xml",
        "fleet-status-407-chal.xml",
        "syncml11-namespace-lowercase.xml",
        "client-package1.xml",
        "server-typical-30-commands.xml",
    ] {
        assert!(names.iter().any(|n| n == must), "missing fixture {must}");
    }
    assert!(names.iter().filter(|n| n.starts_with("seed-")).count() >= 12);
}

#[test]
fn tolerant_reading_keeps_what_the_seeds_and_servers_send() {
    // The CSP page's Atomic: LocURIs on their own lines are trimmed, its missing '/' is kept as is.
    let m = decode_file("seed-eam-atomic-download-install.xml");
    let Command::Atomic(a) = &m.body.commands[0] else { panic!("expected Atomic") };
    let Command::Add(add) = &a.commands[0] else { panic!("expected Add") };
    assert_eq!(add.items.len(), 4);
    assert_eq!(
        add.items[0].target.as_deref(),
        Some(
            "./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/Name"
        )
    );
    assert!(add.items[3].target.as_deref().is_some_and(|t| t.contains("Download%7BB316008A")));
    // The seed's space after %7B is part of the LocURI.
    let m = decode_file("seed-eam-get-inventory-app.xml");
    let Command::Get(g) = &m.body.commands[0] else { panic!("expected Get") };
    assert!(g.items[0].target.as_deref().is_some_and(|t| t.ends_with("/%7B D5DC1EBB-A7F1-DF11-9264-00237DE2DB9E%7D")));
    // Escaped text keeps its trailing space.
    let m = decode_file("seed-dmclient-replace-managementserveraddresslist.xml");
    let Command::Replace(r) = &m.body.commands[0] else { panic!("expected Replace") };
    assert_eq!(r.items[0].data.as_deref(), Some("<https://server1><https:// server2> "));

    // Fleet: UUID CmdIDs, Meta after Data, the escaped MsiInstallJob arrives as XML text.
    let m = decode_file("fleet-msi-install.xml");
    let Command::Exec(e) = &m.body.commands[2] else { panic!("expected Exec") };
    assert_eq!(e.cmd_id, "c3a9b5f2-71d4-4e0b-8a26-9e4f0d13b7c8");
    let item = &e.items[0];
    assert_eq!(item.meta.as_ref().and_then(|m| m.format.as_deref()), Some("xml"));
    let job = item.data.as_deref().unwrap_or_default();
    assert!(job.starts_with(r#"<MsiInstallJob id="{A427C0AA-E2D5-40DF-ACE8-0D726A6BE096}">"#), "{job}");
    // The job is XML itself, so its own `&` arrives escaped once more.
    assert!(job.contains(r#"FLEET_SECRET="s3cr3t&amp;x""#), "{job}");
    // CDATA: kept character for character, including the entity it contains.
    let m = decode_file("fleet-msi-install-cdata.xml");
    let Command::Exec(e) = &m.body.commands[2] else { panic!("expected Exec") };
    let job = e.items[0].data.as_deref().unwrap_or_default();
    assert!(job.contains("7z2408-x64.msi?sig=a%2Fb&amp;se=2026"), "{job}");
    assert!(job.contains("\n    <Enforcement>\n"), "{job}");
    // Unescaped embedded XML is kept intact.
    let m = decode_file("fleet-msi-install-raw-xml.xml");
    let Command::Exec(e) = &m.body.commands[1] else { panic!("expected Exec") };
    assert!(
        e.items[0].data.as_deref().is_some_and(|d| d.starts_with("<MsiInstallJob") && d.ends_with("</MsiInstallJob>"))
    );

    // Status with a Chal, and no Final on the first message of a multi-message package.
    let m = decode_file("fleet-status-407-chal.xml");
    let Command::Status(s) = &m.body.commands[0] else { panic!("expected Status") };
    assert_eq!(s.data, "407");
    let chal = s.chal.as_ref().expect("Chal");
    assert_eq!(chal.meta.type_.as_deref(), Some("syncml:auth-md5"));
    assert_eq!(chal.meta.next_nonce.as_deref(), Some("ZmxlZXQtbm9uY2UtMDAwMQ=="));
    assert!(!decode_file("server-multi-message-1222-part1.xml").body.final_);
    let hdr = decode_file("server-multi-message-1222-part1.xml").hdr;
    assert_eq!(hdr.meta.and_then(|m| m.max_msg_size), Some("524288".into()));
    assert_eq!(
        decode_file("server-sequence-user-scope.xml").hdr.resp_uri.as_deref(),
        Some("https://mdm2.example/ManagementServer/MDM.svc?s=30")
    );
    // Client package 1 with MD5 credentials.
    let m = decode_file("client-package1-md5-cred.xml");
    assert_eq!(m.hdr.cred.as_ref().map(|c| c.data.as_str()), Some("Zm9vYmFyYmF6cXV4MDEyMw=="));
    let Command::Replace(r) = &m.body.commands[2] else { panic!("expected Replace") };
    assert_eq!(r.items[1].source.as_deref(), Some("./DevInfo/Man"));
    assert_eq!(decode_file("server-typical-30-commands.xml").body.commands.len(), 33);
    // Commands Windows does not implement and non-command elements are kept by name (the device
    // answers them with a status, OMA DM RepPro Atomic and Sequence), in the body and inside an Atomic.
    let m = decode_file("server-unknown-commands.xml");
    let names: Vec<(&str, &str)> = m.body.commands.iter().map(|c| (c.name(), c.cmd_id())).collect();
    assert_eq!(names, [("Copy", "1"), ("Replase", "2"), ("Atomic", "3")]);
    let Command::Atomic(a) = &m.body.commands[2] else { panic!("expected Atomic") };
    assert_eq!(a.commands.iter().map(|c| c.name()).collect::<Vec<_>>(), ["Replace", "Item"]);
}

#[test]
fn encode_writes_canonical_compact_syncml() {
    // Namespace 1.2, DTD order (Chal before Data), metinf namespace on each Meta child, no
    // whitespace between elements.
    assert_eq!(
        encode(&decode_file("fleet-status-407-chal.xml")),
        concat!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>"#,
            r#"<SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>1E08C6E95D8BB843B1278FF45BC60CC6</LocURI></Target>"#,
            r#"<Source><LocURI>https://fleet.example.com/api/mdm/microsoft/management</LocURI></Source></SyncHdr>"#,
            r#"<SyncBody><Status><CmdID>1</CmdID><MsgRef>1</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd>"#,
            r#"<Chal><Meta><Format xmlns="syncml:metinf">b64</Format><Type xmlns="syncml:metinf">syncml:auth-md5</Type>"#,
            r#"<NextNonce xmlns="syncml:metinf">ZmxlZXQtbm9uY2UtMDAwMQ==</NextNonce></Meta></Chal><Data>407</Data></Status>"#,
            r#"<Final/></SyncBody></SyncML>"#,
        )
    );
    // The 1.1 namespace and the seeds' layout come out canonical too; LocURIs are trimmed.
    let wire = encode(&decode_file("syncml11-namespace-lowercase.xml"));
    assert!(wire.starts_with(r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr>"#), "{wire}");
    assert!(!wire.contains('\n'), "{wire}");
    let wire = encode(&decode_file("seed-eam-atomic-download-install.xml"));
    assert!(wire.contains("<LocURI>./Vendor/MSFT/EnterpriseAppManagement/4000000001/EnterpriseApps/Download/%7BB316008A-141D-4A79-810F-8B764C4CFDFB%7D/Name</LocURI>"), "{wire}");
    // Embedded XML is written escaped, never as CDATA, whatever form it arrived in.
    for file in ["fleet-msi-install.xml", "fleet-msi-install-cdata.xml", "fleet-msi-install-raw-xml.xml"] {
        let wire = encode(&decode_file(file));
        assert!(wire.contains("<Data>&lt;MsiInstallJob id=&quot;{"), "{file}: {wire}");
        assert!(!wire.contains("CDATA"), "{file}: {wire}");
    }
}

#[test]
fn every_truncated_prefix_of_every_valid_message_is_refused() {
    for (path, text) in corpus() {
        let file = name(&path);
        // Trailing whitespace after </SyncML> is not part of the message.
        let message = text.trim_end();
        for cut in (0..message.len()).filter(|&i| message.is_char_boundary(i)) {
            match decode(&message[..cut]) {
                Err(e) => assert!(e.offset() <= cut, "{file}: cut at {cut}: offset {} beyond the input", e.offset()),
                Ok(_) => panic!("{file}: the prefix of {cut} bytes was accepted:\n{}", &message[..cut]),
            }
        }
    }
}

/// Reads `<!-- expect: ELEMENT at LINE:COL -->` from the first line of a malformed fixture.
fn expectation(file: &str, text: &str) -> (String, usize, usize) {
    let first = text.lines().next().unwrap_or_default();
    let spec = first
        .strip_prefix("<!-- expect: ")
        .and_then(|s| s.strip_suffix(" -->"))
        .unwrap_or_else(|| panic!("{file}: first line must be <!-- expect: ELEMENT at LINE:COL -->"));
    let (element, at) = spec.split_once(" at ").unwrap_or_else(|| panic!("{file}: bad expectation {spec:?}"));
    let (line, col) = at.split_once(':').unwrap_or_else(|| panic!("{file}: bad position {at:?}"));
    (element.to_string(), line.parse().expect("line"), col.parse().expect("column"))
}

#[test]
fn malformed_files_give_typed_errors_naming_the_element_and_its_line_and_column() {
    let files = xml_files(&corpus_dir().join("malformed"));
    assert!(files.len() >= 8, "only {} malformed fixtures", files.len());
    for (path, text) in files {
        let file = name(&path);
        let (element, line, col) = expectation(&file, &text);
        let e = match decode(&text) {
            Ok(_) => panic!("{file}: malformed input was accepted"),
            Err(e) => e,
        };
        let shown = e.to_string();
        let named = e.element() == Some(element.as_str())
            || shown.contains(&format!("<{element}>"))
            || shown.contains(&format!("</{element}>"));
        assert!(named, "{file}: error does not name <{element}>: {shown}");
        assert_eq!(line_col(&text, e.offset()), (line, col), "{file}: {shown}");
        if file.starts_with("not-syncml") || file.starts_with("wrong-namespace") {
            assert!(matches!(e, DecodeError::NotSyncMl { .. }), "{file}: {e:?}");
        }
    }
}

#[test]
fn error_kinds_say_who_is_at_fault() {
    assert!(matches!(decode(""), Err(DecodeError::Xml { offset: 0, .. })));
    assert!(matches!(decode("   \n"), Err(DecodeError::Xml { .. })));
    assert!(matches!(decode("HTTP/1.1 200 OK"), Err(DecodeError::Xml { .. })));
    assert!(matches!(decode(r#"{"error":"unauthorized"}"#), Err(DecodeError::Xml { .. })));
    assert!(matches!(decode("<Envelope/>"), Err(DecodeError::NotSyncMl { offset: 0, .. })));
    let e = decode("<SyncML><SyncHdr/></SyncML>").unwrap_err();
    assert_eq!(e.element(), Some("SyncHdr"));
    assert!(e.to_string().contains("missing <VerDTD>"), "{e}");
    // A byte-order mark, as .NET servers write it, is not content.
    let text = std::fs::read_to_string(corpus_dir().join("client-package1.xml")).expect("fixture");
    assert_eq!(decode(&format!("\u{feff}{text}")), decode(&text));
    let e = decode("\u{feff}<html/>").unwrap_err();
    assert_eq!(e.offset(), 3, "offsets count the mark: {e}");
    // Columns count characters: `é` is two bytes, and an offset inside it points at it.
    assert_eq!(line_col("a\nbc\né\nxyz", 8), (4, 1));
    assert_eq!(line_col("a\nbc\né\nxyz", 7), (3, 2));
    assert_eq!(line_col("a\nbc\né\nxyz", 6), (3, 1));
}

/// Inputs the mutation test (or review) found, each once a panic or a broken round trip.
#[test]
fn regressions_found_by_mutation() {
    let text = std::fs::read_to_string(corpus_dir().join("client-package1.xml")).expect("fixture");
    // A byte-order mark made the reader slice inside the mark and panic.
    assert!(decode(&format!("\u{feff}{text}")).is_ok());
    // `<Final//>` was read as an element named `Final/` and written back as unreadable XML.
    let e = decode(&text.replace("<Final/>", "<Final//>")).unwrap_err();
    assert!(e.to_string().contains("<Final/> is not a valid element name"), "{e}");
    // A prefix with no local name (`<a:>`) left an element with an empty name.
    assert!(decode(&text.replace("<Final/>", "<a:>x</a:><Final/>")).is_err());
    // An XML declaration inside an element was kept as text.
    assert!(decode(&text.replace("<SessionID>7", "<SessionID>7<?xml version=\"1.0\"?>")).is_err());
    // A carriage return in a value (sent as &#13;) came back as a line feed.
    let m = decode(&text.replace("Contoso Ltd.", "Contoso&#13;Ltd.")).expect("decodes");
    assert_eq!(decode(&encode(&m)).expect("re-decodes"), m);
    assert!(encode(&m).contains("Contoso&#13;Ltd."));
}

fn mdmsim(args: &[&str]) -> (i32, String, String) {
    let out = Process::new(env!("CARGO_BIN_EXE_mdmsim")).args(args).output().expect("run mdmsim");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_check_accepts_the_corpus_and_fmt_shows_embedded_xml_readably() {
    let files: Vec<String> = corpus().iter().map(|(p, _)| p.to_string_lossy().into_owned()).collect();
    let mut args = vec!["syncml", "check"];
    args.extend(files.iter().map(String::as_str));
    let (code, out, err) = mdmsim(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().filter(|l| l.contains(": ok (")).count(), files.len(), "{out}");
    assert!(out.contains("server-typical-30-commands.xml: ok (33 commands)"), "{out}");

    let file = corpus_dir().join("fleet-msi-install.xml");
    let (code, out, err) = mdmsim(&["syncml", "fmt", &file.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    // One element per line, and the escaped MsiInstallJob shown as indented XML.
    assert!(out.lines().any(|l| l.trim() == "<Exec>"), "{out}");
    assert!(out.lines().any(|l| l.trim() == "<CmdID>c3a9b5f2-71d4-4e0b-8a26-9e4f0d13b7c8</CmdID>"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("<MsiInstallJob id=")), "{out}");
    assert!(
        out.lines().any(|l| l.trim() == "<ContentURL>https://download.fleetdm.com/fleetd-base.msi</ContentURL>"),
        "{out}"
    );
    assert!(!out.contains("&lt;MsiInstallJob"), "{out}");

    // `-` reads standard input.
    let mut child = Process::new(env!("CARGO_BIN_EXE_mdmsim"))
        .args(["syncml", "fmt", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mdmsim");
    let text = std::fs::read_to_string(corpus_dir().join("client-package1.xml")).expect("fixture");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("mdmsim ends");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(shown.lines().any(|l| l.trim() == "<LocURI>./DevInfo/Man</LocURI>"), "{shown}");
}

#[test]
fn cli_reports_a_broken_file_with_file_line_column_and_element() {
    let file = corpus_dir().join("malformed/unknown-element-in-item.xml");
    let shown = file.to_string_lossy().into_owned();
    let (code, _, err) = mdmsim(&["syncml", "check", &shown]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&format!("{shown}:7:5: ")), "{err}");
    assert!(err.contains("Bogus"), "{err}");
    let (code, out, err) = mdmsim(&["syncml", "fmt", &shown]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains(&format!("{shown}:7:5: ")) && err.contains("Bogus"), "{err}");
    // A mix of good and bad files: the good ones are listed, the run fails.
    let good = corpus_dir().join("client-package1.xml");
    let (code, out, err) = mdmsim(&["syncml", "check", &good.to_string_lossy(), &shown]);
    assert_eq!(code, 2, "{err}");
    assert!(out.contains("client-package1.xml: ok (3 commands)"), "{out}");
    assert!(err.contains("1 of 2 files"), "{err}");
}

/// Pieces of XML that parsers trip over, inserted by [`mutate`].
const TRICKY: &[&str] = &[
    "\u{feff}",
    "<",
    ">",
    "&",
    "&#x0;",
    "&#xF000;",
    "]]>",
    "<![CDATA[",
    "<!--",
    "\r",
    "é",
    "<?xml?>",
    "</",
    "/>",
    ":",
];

/// Applies one random edit: flip a byte, delete a range, duplicate a range, or insert a tricky
/// piece of XML.
pub(crate) fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    let at = rng.random_range(0..bytes.len());
    match rng.random_range(0..4u8) {
        3 => {
            let piece = TRICKY[rng.random_range(0..TRICKY.len())].as_bytes();
            bytes.splice(at..at, piece.iter().copied());
        }
        0 => bytes[at] ^= 1 << rng.random_range(0..8u32),
        1 => {
            let end = (at + rng.random_range(1..32usize)).min(bytes.len());
            bytes.drain(at..end);
        }
        _ => {
            let end = (at + rng.random_range(1..64usize)).min(bytes.len());
            let copy = bytes[at..end].to_vec();
            let to = rng.random_range(0..=bytes.len());
            bytes.splice(to..to, copy);
        }
    }
}

#[test]
fn seeded_random_mutations_of_the_corpus_never_panic_the_decoder() {
    const SEED: u64 = 0x5EED_2026_0002;
    const ROUNDS: usize = 20_000;
    let files = corpus();
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let (mut refused, mut accepted) = (0, 0);
    for round in 0..ROUNDS {
        let (path, text) = &files[rng.random_range(0..files.len())];
        let mut bytes = text.as_bytes().to_vec();
        for _ in 0..rng.random_range(1..4u8) {
            mutate(&mut rng, &mut bytes);
        }
        // The decoder takes text: invalid UTF-8 is the transport's business.
        let input = String::from_utf8_lossy(&bytes).into_owned();
        let outcome = std::panic::catch_unwind(|| decode(&input).map(|m| (encode(&m), m)));
        match outcome {
            Ok(Ok((wire, msg))) => {
                accepted += 1;
                // Whatever we accept we must be able to write and read back unchanged.
                match decode(&wire) {
                    Ok(again) => assert_eq!(again, msg, "seed {SEED:#x} round {round} ({}): round trip", name(path)),
                    Err(e) => panic!("seed {SEED:#x} round {round} ({}): re-decode failed: {e}\n{wire}", name(path)),
                }
            }
            Ok(Err(e)) => {
                refused += 1;
                assert!(e.offset() <= input.len(), "seed {SEED:#x} round {round}: offset out of range");
            }
            Err(_) => panic!("seed {SEED:#x} round {round}: decode panicked on a mutation of {}", name(path)),
        }
    }
    // Mutations must actually exercise the error paths, not just whitespace.
    assert!(refused > ROUNDS / 4, "only {refused} of {ROUNDS} mutations were refused ({accepted} accepted)");
}
