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
