//! SyncML (OMA-DM 1.2 as Windows uses it): the message model, its one codec, and the status
//! and alert codes.
//!
//! Owns bytes <-> typed messages. It does not know what the commands mean: executing them is the
//! tree's job, ordering them into a session is the session's. Both the device side and the
//! embedded reference server use this module, and nothing else of each other.

mod codes;
mod model;
mod read;
mod write;

pub use codes::{AlertCode, StatusCode};
pub use model::*;
pub use read::{DecodeError, decode, line_col};
pub use write::{PRETTY_MAX_BYTES, encode, pretty, pretty_xml, pretty_xml_limited};

/// `text` without leading and trailing whitespace, exactly as [`str::trim`] (Unicode
/// `White_Space`), with a byte loop for the usual case: ASCII at both ends. Every leaf of every
/// message and every LocURI goes through it.
pub(crate) fn trim(text: &str) -> &str {
    // The ASCII characters of `White_Space`: tab, line feed, vertical tab, form feed, carriage
    // return and space.
    let space = |b: u8| b == b' ' || (b'\t'..=b'\r').contains(&b);
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|&b| !space(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| !space(b)).map_or(start, |last| last + 1);
    // A non-ASCII character at either end may be whitespace itself (a no-break space, an ideographic
    // space): the full rule decides.
    if bytes.get(start).is_some_and(|&b| b >= 0x80) || (end > start && bytes[end - 1] >= 0x80) {
        return text.trim();
    }
    &text[start..end]
}

/// The MIME type of SyncML over HTTP (MS-MDM §2.1 HTTP transport).
pub const CONTENT_TYPE: &str = "application/vnd.syncml.dm+xml";

#[cfg(test)]
mod tests {
    use super::*;

    const PKG: &str = r#"<?xml version="1.0"?>
<SyncML xmlns="syncml:SYNCML1.1"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto>
 <SessionID>7</SessionID><MsgID>1</MsgID>
 <Target><LocURI>0123456789ABCDEF</LocURI></Target>
 <Source><LocURI>https://mdm.example/MDM.svc</LocURI></Source></SyncHdr>
<SyncBody>
 <Atomic><CmdID>a-1</CmdID>
  <Add><CmdID>e6f5-uuid</CmdID><Item><Target><LocURI>
     ./Vendor/MSFT/X/%7Bid%7D/Name
  </LocURI></Target><Data>A &amp; B</Data><Meta><Format xmlns="syncml:metinf">chr</Format></Meta></Item></Add>
  <Exec><CmdID>2</CmdID><Item><Target><LocURI>./X</LocURI></Target><Data><![CDATA[<MsiInstallJob id="{1}"><Product/></MsiInstallJob>]]></Data></Item></Exec>
  <Exec><CmdID>3</CmdID><Item><Target><LocURI>./X</LocURI></Target><Data><MsiInstallJob id="{1}"><Product Version="1"/></MsiInstallJob></Data></Item></Exec>
 </Atomic>
 <Final/></SyncBody></SyncML>"#;

    #[test]
    fn tolerant_decode_keeps_what_servers_send_and_round_trips() {
        let msg = decode(PKG).unwrap();
        assert_eq!(msg.hdr.session_id, "7");
        let Command::Atomic(a) = &msg.body.commands[0] else { panic!("expected Atomic") };
        let Command::Add(add) = &a.commands[0] else { panic!("expected Add") };
        assert_eq!(add.cmd_id, "e6f5-uuid");
        assert_eq!(add.items[0].target.as_deref(), Some("./Vendor/MSFT/X/%7Bid%7D/Name"));
        assert_eq!(add.items[0].data.as_deref(), Some("A & B"));
        assert_eq!(add.items[0].meta.as_ref().and_then(|m| m.format.as_deref()), Some("chr"));
        let Command::Exec(cdata) = &a.commands[1] else { panic!("expected Exec") };
        assert_eq!(cdata.items[0].data.as_deref(), Some(r#"<MsiInstallJob id="{1}"><Product/></MsiInstallJob>"#));
        let Command::Exec(raw) = &a.commands[2] else { panic!("expected Exec") };
        assert_eq!(
            raw.items[0].data.as_deref(),
            Some(r#"<MsiInstallJob id="{1}"><Product Version="1"/></MsiInstallJob>"#)
        );
        assert!(msg.body.final_);
        let again = decode(&encode(&msg)).unwrap();
        assert_eq!(again, msg);
    }

    #[test]
    fn trim_is_str_trim() {
        for text in [
            "",
            " ",
            "\t\r\n",
            "x",
            " x ",
            "\u{b}x\u{c}",
            "a b",
            "\u{a0}x",
            "x\u{3000}",
            " \u{2003} x \u{85}",
            "é",
            " é ",
            "\u{1c}x\u{1f}",
            "./Vendor/MSFT/X",
        ] {
            assert_eq!(trim(text), text.trim(), "{text:?}");
        }
    }

    #[test]
    fn errors_name_the_element_and_offset() {
        let e = decode("<SyncML><SyncHdr><Bogus/></SyncHdr></SyncML>").unwrap_err();
        assert_eq!(e.element(), Some("Bogus"));
        assert_eq!(e.offset(), 17);
        let e = decode("<html/>").unwrap_err();
        assert!(matches!(e, DecodeError::NotSyncMl { .. }), "{e}");
        let e = decode("<SyncML><SyncHdr>").unwrap_err();
        assert!(matches!(e, DecodeError::Xml { .. }), "{e}");
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }

    #[test]
    fn repeated_or_broken_attributes_are_refused_and_many_distinct_ones_accepted() {
        let with_meta =
            |attrs: &str| PKG.replacen(r#"<Format xmlns="syncml:metinf">"#, &format!("<Format {attrs}>"), 1);
        for bad in [r#"a="1" a="2""#, r#"a="1" b="2" c="3" d="4" e="5" f="6" g="7" h="8" i="9" a="0""#, r#"a=1"#] {
            let e = decode(&with_meta(bad)).unwrap_err();
            assert!(
                matches!(&e, DecodeError::Xml { message, .. } if message.contains("attributes of <Format>")),
                "{bad}: {e}"
            );
        }
        let many = (0..12).map(|i| format!(r#"a{i}="{i}""#)).collect::<Vec<_>>().join(" ");
        assert!(decode(&with_meta(&many)).is_ok());
        let e = decode(&PKG.replacen(r#"xmlns="syncml:SYNCML1.1""#, r#"xmlns="syncml:SYNCML1.1" xmlns="x""#, 1));
        assert!(matches!(e, Err(DecodeError::Xml { .. })), "{e:?}");
        let e = decode(&PKG.replacen(r#"xmlns="syncml:SYNCML1.1""#, r#"xmlns="syncml:other""#, 1));
        assert!(matches!(e, Err(DecodeError::NotSyncMl { .. })), "{e:?}");
    }
}
