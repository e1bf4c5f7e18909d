//! The NodeCache CSP's behaviour (Microsoft's NodeCache CSP page); its nodes come from its DDF
//! facts (`ddf_csp`). A server caches node values on the device side: it adds
//! `<ProviderID>/Nodes/<NodeID>` with a `NodeURI` and the `ExpectedValue` it last saw, and later
//! asks which nodes changed instead of reading each one.
//!
//! - `ChangedNodes` reads the NodeIDs whose node's actual value (a Get of `NodeURI` through the
//!   device's whole tree, computed values included) differs from `ExpectedValue`, comma-separated
//!   in NodeID order (the page forbids commas in NodeIDs, which makes them the list separator).
//!   A node without `NodeURI`, or without `ExpectedValue`, or whose `NodeURI` is not there, has
//!   changed.
//! - `ChangedNodesData` reads the page's XML for the same nodes:
//!   `<Nodes><Node Id="10" Uri=""></Node><Node Id="20" Uri="./DevDetail/...">BASE64</Node></Nodes>`,
//!   the actual value base64-encoded (empty when the node is not there).
//! - An Add of `Nodes/<NodeID>/AutoSetExpectedValue` sets `ExpectedValue` to the node's actual
//!   value at that moment.
//!
//! Not modelled: the `application/x-nodemon-sha256` and `application/x-nodemon-nonexistent`
//! Meta Types (the tree engine hands CSPs the data, not the item's Meta Type), so expected
//! values are compared as text.

use base64::Engine as _;

use super::ddf_csp::DdfBehaviour;
use crate::syncml::{Command, Item, ItemCmd, StatusCode};
use crate::tree::{CspCx, NodeRef, Tree, WriteOp};

/// The NodeCache CSP's computed nodes.
pub struct NodeCache;

impl DdfBehaviour for NodeCache {
    fn read(&self, cx: &CspCx<'_>, node: NodeRef<'_>) -> Option<String> {
        let (provider, leaf) = node.rel.split_once('/')?;
        match leaf {
            "ChangedNodes" => Some(changed(cx, provider).iter().map(|c| c.id.as_str()).collect::<Vec<_>>().join(",")),
            "ChangedNodesData" => {
                let mut out = String::from("<Nodes>");
                for c in changed(cx, provider) {
                    let value =
                        c.actual.map(|v| base64::engine::general_purpose::STANDARD.encode(v)).unwrap_or_default();
                    out.push_str(&format!("<Node Id=\"{}\" Uri=\"{}\">{value}</Node>", esc(&c.id), esc(&c.uri)));
                }
                out.push_str("</Nodes>");
                Some(out)
            }
            _ => None,
        }
    }

    fn after_write(&self, cx: &mut CspCx<'_>, op: WriteOp, node: NodeRef<'_>) -> Result<(), StatusCode> {
        let parts: Vec<&str> = node.rel.split('/').collect();
        if let ([provider, "Nodes", id, "AutoSetExpectedValue"], WriteOp::Add | WriteOp::Replace) =
            (parts.as_slice(), op)
        {
            let uri = cx.value(&format!("{provider}/Nodes/{id}/NodeURI")).unwrap_or_default().trim().to_string();
            let actual = actual_value(cx, &uri).unwrap_or_default();
            cx.set(&format!("{provider}/Nodes/{id}/ExpectedValue"), actual);
        }
        Ok(())
    }
}

/// A cached node whose value is not the expected one.
struct Changed {
    id: String,
    uri: String,
    actual: Option<String>,
}

fn changed(cx: &CspCx<'_>, provider: &str) -> Vec<Changed> {
    let mut out = Vec::new();
    for id in cx.children(&format!("{provider}/Nodes")) {
        let uri = cx.value(&format!("{provider}/Nodes/{id}/NodeURI")).map(|u| u.trim().to_string());
        let expected = cx.value(&format!("{provider}/Nodes/{id}/ExpectedValue"));
        let actual = uri.as_deref().and_then(|u| actual_value(cx, u));
        let same = uri.is_some() && expected.is_some() && actual.as_deref() == expected;
        if !same {
            out.push(Changed { id, uri: uri.unwrap_or_default(), actual });
        }
    }
    out
}

/// The value a server's Get of `uri` reads on this device now (`None` when it is not 200 or
/// not a leaf value). NodeCache's own nodes are read as stored, not recomputed.
fn actual_value(cx: &CspCx<'_>, uri: &str) -> Option<String> {
    if uri.is_empty() {
        return None;
    }
    let registry = if uri.contains("MSFT/NodeCache") { registry_without_nodecache() } else { crate::csp::registry() };
    let mut state = cx.state.clone();
    let mut tree = Tree::new(&registry, &mut state, cx.env);
    let get = Command::Get(ItemCmd { cmd_id: "1".into(), items: vec![Item::target(uri)], ..ItemCmd::default() });
    let out = tree.execute(&get);
    let o = out.first().filter(|o| o.code == StatusCode::Ok)?;
    o.results.first().and_then(|i| i.data.clone())
}

/// A registry in which NodeCache values are plain stored values (no recursion through them).
fn registry_without_nodecache() -> crate::tree::Registry {
    let mut r = crate::tree::Registry::new();
    r.register(StoredOnly);
    r
}

/// NodeCache's nodes read as stored.
struct StoredOnly;

impl crate::tree::Csp for StoredOnly {
    fn name(&self) -> &'static str {
        "NodeCache (stored)"
    }
    fn root(&self) -> &'static str {
        "Vendor/MSFT/NodeCache"
    }
    fn schema(&self) -> &'static crate::tree::NodeSpec {
        static ANY: crate::tree::NodeSpec = crate::tree::NodeSpec::interior(
            "NodeCache",
            crate::tree::Ops::GET,
            &[crate::tree::NodeSpec::interior(
                "<ProviderID>",
                crate::tree::Ops::GET,
                &[
                    crate::tree::NodeSpec::leaf("CacheVersion", crate::tree::Format::Chr, crate::tree::Ops::GET),
                    crate::tree::NodeSpec::interior(
                        "Nodes",
                        crate::tree::Ops::GET,
                        &[crate::tree::NodeSpec::interior(
                            "<NodeID>",
                            crate::tree::Ops::GET,
                            &[
                                crate::tree::NodeSpec::leaf("NodeURI", crate::tree::Format::Chr, crate::tree::Ops::GET),
                                crate::tree::NodeSpec::leaf(
                                    "ExpectedValue",
                                    crate::tree::Format::Chr,
                                    crate::tree::Ops::GET,
                                ),
                            ],
                        )],
                    ),
                ],
            )],
        );
        &ANY
    }
    fn scopes(&self) -> &'static [crate::tree::Scope] {
        &[crate::tree::Scope::Device, crate::tree::Scope::User]
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Env, Profile, TreeState};

    fn run(s: &mut TreeState, kind: &str, uri: &str, data: Option<&str>) -> (StatusCode, Option<String>) {
        let registry = crate::csp::registry();
        let env = Env::new(chrono::Utc::now(), Profile::Win10);
        let mut item = Item::target(uri);
        item.data = data.map(str::to_string);
        let c = ItemCmd { cmd_id: "1".into(), items: vec![item], ..ItemCmd::default() };
        let cmd = match kind {
            "Add" => Command::Add(c),
            "Replace" => Command::Replace(c),
            "Delete" => Command::Delete(c),
            _ => Command::Get(c),
        };
        let out = Tree::new(&registry, s, &env).execute(&cmd);
        s.commit();
        (out[0].code, out[0].results.first().and_then(|i| i.data.clone()))
    }

    #[test]
    fn changed_nodes_list_what_differs_from_the_expected_values() {
        let mut s = TreeState::new();
        s.set_value("DevDetail/SwV", "10.0.22631.4460");
        s.set_value("DevDetail/Ext/Microsoft/DeviceName", "PC-1");
        s.commit();
        let p = "./Vendor/MSFT/NodeCache/MDMSRV1";
        assert_eq!(run(&mut s, "Add", p, None).0, StatusCode::Ok);
        for (id, uri, expected) in
            [("10", "./DevDetail/SwV", "10.0.22631.4460"), ("20", "./DevDetail/Ext/Microsoft/DeviceName", "PC-1")]
        {
            assert_eq!(run(&mut s, "Add", &format!("{p}/Nodes/{id}/NodeURI"), Some(uri)).0, StatusCode::Ok);
            assert_eq!(run(&mut s, "Add", &format!("{p}/Nodes/{id}/ExpectedValue"), Some(expected)).0, StatusCode::Ok);
        }
        assert_eq!(run(&mut s, "Add", &format!("{p}/Nodes/30"), None).0, StatusCode::Ok);
        assert_eq!(run(&mut s, "Get", &format!("{p}/ChangedNodes"), None), (StatusCode::Ok, Some("30".into())));
        s.set_value("DevDetail/Ext/Microsoft/DeviceName", "SOMENEWVALUE");
        s.commit();
        assert_eq!(run(&mut s, "Get", &format!("{p}/ChangedNodes"), None).1.as_deref(), Some("20,30"));
        assert_eq!(
            run(&mut s, "Get", &format!("{p}/ChangedNodesData"), None).1.as_deref(),
            Some(
                r#"<Nodes><Node Id="20" Uri="./DevDetail/Ext/Microsoft/DeviceName">U09NRU5FV1ZBTFVF</Node><Node Id="30" Uri=""></Node></Nodes>"#
            )
        );
        // AutoSetExpectedValue takes the actual value; the node no longer counts as changed.
        assert_eq!(run(&mut s, "Add", &format!("{p}/Nodes/20/AutoSetExpectedValue"), None).0, StatusCode::Ok);
        assert_eq!(run(&mut s, "Get", &format!("{p}/Nodes/20/ExpectedValue"), None).1.as_deref(), Some("SOMENEWVALUE"));
        assert_eq!(run(&mut s, "Delete", &format!("{p}/Nodes/30"), None).0, StatusCode::Ok);
        assert_eq!(run(&mut s, "Get", &format!("{p}/ChangedNodes"), None), (StatusCode::Ok, Some(String::new())));
        // A node pointing at NodeCache itself reads its stored value, without recursion.
        assert_eq!(
            run(&mut s, "Add", &format!("{p}/Nodes/40/NodeURI"), Some(&format!("{p}/Nodes/20/ExpectedValue"))).0,
            StatusCode::Ok
        );
        assert_eq!(run(&mut s, "Add", &format!("{p}/Nodes/40/ExpectedValue"), Some("SOMENEWVALUE")).0, StatusCode::Ok);
        assert_eq!(run(&mut s, "Get", &format!("{p}/ChangedNodes"), None).1.as_deref(), Some(""));
        // Another provider's cache is its own.
        assert_eq!(run(&mut s, "Get", "./Vendor/MSFT/NodeCache/Other/ChangedNodes", None).0, StatusCode::NotFound);
    }
}
