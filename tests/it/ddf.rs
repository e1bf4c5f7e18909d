//! `mdmsim ddf`: compiling a folder of DDF files into the node table, showing nodes, and the
//! errors a broken DDF file gives.

use super::support::mdmsim;

/// A small DDF document in Microsoft's shape.
const DDF: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE MgmtTree PUBLIC " -//OMA//DTD-DM-DDF 1.2//EN"
  "http://www.openmobilealliance.org/tech/DTD/DM_DDF-V1_2.dtd"
  [<?oma-dm-ddf-ver supported-versions="1.2"?>]>
<MgmtTree xmlns:MSFT="http://schemas.microsoft.com/MobileDevice/DM">
  <VerDTD>1.2</VerDTD>
  <Node>
    <NodeName>Gadget</NodeName>
    <Path>./Device/Vendor/MSFT</Path>
    <DFProperties>
      <AccessType><Get /></AccessType>
      <DFFormat><node /></DFFormat>
      <Occurrence><One /></Occurrence>
      <Scope><Permanent /></Scope>
      <DFType><MIME>com.microsoft/1.0/MDM/Gadget</MIME></DFType>
    </DFProperties>
    <Node>
      <NodeName>Volume</NodeName>
      <DFProperties>
        <AccessType><Get /><Replace /></AccessType>
        <DFFormat><int /></DFFormat>
        <Occurrence><One /></Occurrence>
        <Scope><Permanent /></Scope>
        <DFType><MIME>text/plain</MIME></DFType>
        <DefaultValue>5</DefaultValue>
        <MSFT:AllowedValues ValueType="Range"><MSFT:Value>[0-10]</MSFT:Value></MSFT:AllowedValues>
      </DFProperties>
    </Node>
  </Node>
</MgmtTree>
"#;

#[test]
fn compile_writes_the_table_and_show_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let ddf = dir.path().join("ddf");
    std::fs::create_dir(&ddf).unwrap();
    std::fs::write(ddf.join("Gadget.xml"), DDF).unwrap();
    std::fs::write(ddf.join("README.md"), "not a DDF file").unwrap();
    let out = dir.path().join("nodes.tsv");
    let (code, _, err) = mdmsim(&["ddf", "compile", &ddf.to_string_lossy(), "--out", &out.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 nodes"), "{err}");
    let table = std::fs::read_to_string(&out).unwrap();
    assert!(
        table.contains("./Device/Vendor/MSFT/Gadget/Volume\tint\tGR\t1\tP\t\ttext/plain\t\t\t=5\trange:[0-10]"),
        "{table}"
    );
    let (code, shown, err) =
        mdmsim(&["ddf", "show", "./Device/Vendor/MSFT/Gadget/Vol", "--ddf", &ddf.to_string_lossy()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(shown.lines().filter(|l| l.starts_with("./")).count(), 1, "{shown}");
}

#[test]
fn the_builtin_table_shows_a_csp_only_its_ddf_describes() {
    let (code, shown, err) = mdmsim(&["ddf", "show", "./Device/Vendor/MSFT/BitLocker/RequireDeviceEncryption"]);
    assert_eq!(code, 0, "{err}");
    assert!(shown.contains("\tint\tGARD\t0-1\t") && shown.contains("=0\tenum:0|1"), "{shown}");
    let (code, _, err) = mdmsim(&["ddf", "show", "./Device/Vendor/MSFT/NoSuchCsp"]);
    assert_eq!(code, 2);
    assert!(err.contains("no node under ./Device/Vendor/MSFT/NoSuchCsp"), "{err}");
}

#[test]
fn a_broken_ddf_file_is_named_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Broken.xml"), DDF.replace("</DFProperties>\n    </Node>", "</Node>")).unwrap();
    let (code, _, err) = mdmsim(&["ddf", "compile", &dir.path().to_string_lossy()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Broken.xml:") && err.contains("not well-formed"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = mdmsim(&["ddf", "compile", &empty.path().to_string_lossy()]);
    assert_eq!(code, 2);
    assert!(err.contains("holds no .xml file"), "{err}");
}

/// With Microsoft's DDF download at hand (`MDMSIM_DDF_DIR`), the shipped table is exactly what
/// `mdmsim ddf compile` makes of it: the generator and the committed table agree.
#[test]
fn the_shipped_table_is_what_the_generator_makes_of_the_ddf_download() {
    let Ok(dir) = std::env::var("MDMSIM_DDF_DIR") else {
        eprintln!("MDMSIM_DDF_DIR is not set: skipping the comparison with a DDF download");
        return;
    };
    let (code, table, err) = mdmsim(&["ddf", "compile", &dir]);
    assert_eq!(code, 0, "{err}");
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/ddf/nodes.tsv")).unwrap();
    assert!(table == shipped, "src/ddf/nodes.tsv is stale: run `mdmsim ddf compile {dir} --out src/ddf/nodes.tsv`");
}

/// `--ddf DIR` loads a folder of DDF files instead of the built-in table: a CSP only that folder
/// describes answers the server, with its AllowedValues, and is unknown (404) without it.
#[test]
fn ddf_dir_adds_the_csps_it_describes_at_run_time() {
    use mdmsim::syncml::{Command, Item, ItemCmd, Meta};

    use crate::support::server::{Reply, Server, msg};

    let replace = |id: &str, v: &str| {
        let mut item = Item::target("./Device/Vendor/MSFT/Gadget/Volume");
        item.data = Some(v.into());
        item.meta = Some(Box::new(Meta::format("int")));
        Command::Replace(ItemCmd { cmd_id: id.into(), items: vec![item], ..ItemCmd::default() })
    };
    let server = Server::start(vec![
        Reply::Syncml(msg(vec![replace("ok", "7"), replace("big", "11")])),
        Reply::Empty,
        Reply::Syncml(msg(vec![replace("plain", "7")])),
        Reply::Empty,
    ]);
    let dir = tempfile::tempdir().unwrap();
    let ddf = dir.path().join("ddf");
    std::fs::create_dir(&ddf).unwrap();
    std::fs::write(ddf.join("Gadget.xml"), DDF).unwrap();
    let state = dir.path().join("state").to_string_lossy().into_owned();
    let (code, _, err) = mdmsim(&["device", "new", "--state", &state, "--server", &server.url, "--seed", "3"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = mdmsim(&["--ddf", &ddf.to_string_lossy(), "sync", "--state", &state]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = mdmsim(&["sync", "--state", &state]);
    assert_eq!(code, 0, "{err}");
    let msgs = server.device_messages();
    let status = |m: usize, id: &str| {
        msgs[m].body.commands.iter().find_map(|c| match c {
            Command::Status(s) if s.cmd_ref == id => Some(s.data.clone()),
            _ => None,
        })
    };
    assert_eq!(status(1, "ok").as_deref(), Some("200"));
    assert_eq!(status(1, "big").as_deref(), Some("400"), "outside [0-10]");
    assert_eq!(status(3, "plain").as_deref(), Some("404"), "the built-in table has no Gadget CSP");
}
