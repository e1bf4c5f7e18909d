//! Test support for the CSPs with timers and downloads (EnterpriseAppManagement,
//! EnterpriseDesktopAppManagement): one device driven as the runner drives it, commands through
//! the tree engine, timers through `Registry::next_deadline`/`on_deadline`, fetches answered by
//! the test through `on_fetch`.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};

use crate::syncml::{Command, Item, ItemCmd, StatusCode, decode};
use crate::tree::{CmdOutcome, Csp, Effect, Env, FetchOutcome, Profile, Registry, Settings, Tree, TreeState};

/// One device with one CSP registered.
pub struct Rig {
    pub reg: Registry,
    pub state: TreeState,
    pub env: Env,
    /// Fetches asked for and not answered yet: (node, url).
    pub fetches: Vec<(String, String)>,
    /// Alerts raised (code, item).
    pub alerts: Vec<(u16, Item)>,
    /// Session requests.
    pub requests: usize,
    /// Any other effect.
    pub other: Vec<Effect>,
    csp: &'static str,
    /// When false, a command that starts an effect at once fails the test (the CSP's work must
    /// wait for its timers).
    effects_at_once: bool,
}

impl Rig {
    /// A Windows 10 device on 2026-03-01 10:00 UTC with `csp` and these `[behaviour]` settings.
    pub fn new(csp: impl Csp, settings: &[(&str, &str)]) -> Rig {
        let name = csp.name();
        let mut reg = Registry::new();
        reg.register(csp);
        let mut env = Env::new(Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap(), Profile::Win10);
        let mut s = Settings::default();
        for (k, v) in settings {
            s.0.insert(k.to_string(), v.to_string());
        }
        env.settings = Arc::new(s);
        Rig {
            reg,
            state: TreeState::new(),
            env,
            fetches: Vec::new(),
            alerts: Vec::new(),
            requests: 0,
            other: Vec::new(),
            csp: name,
            effects_at_once: true,
        }
    }

    /// The same device, asserting that commands start no effect at once.
    pub fn effects_only_from_timers(mut self) -> Rig {
        self.effects_at_once = false;
        self
    }

    /// Records effects as the runner would carry them out.
    pub fn take(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Fetch { csp, node, url } => {
                    assert_eq!(csp, self.csp);
                    self.fetches.push((node, url));
                }
                Effect::Alert { code, item } => self.alerts.push((code, item)),
                Effect::RequestSession { .. } => self.requests += 1,
                other => self.other.push(other),
            }
        }
    }

    /// Executes the commands of a SyncBody fragment as one server message.
    pub fn run(&mut self, body: &str) -> Vec<CmdOutcome> {
        let xml = format!(
            r#"<SyncML xmlns="SYNCML:SYNCML1.2"><SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>1</SessionID><MsgID>1</MsgID><Target><LocURI>dev</LocURI></Target><Source><LocURI>https://srv</LocURI></Source></SyncHdr><SyncBody>{body}<Final/></SyncBody></SyncML>"#
        );
        let msg = decode(&xml).expect("test message decodes");
        let mut out = Vec::new();
        let mut effects = Vec::new();
        for cmd in &msg.body.commands {
            let mut tree = Tree::new(&self.reg, &mut self.state, &self.env);
            out.extend(tree.execute(cmd));
            effects.append(&mut tree.effects);
        }
        self.state.commit();
        if !self.effects_at_once {
            assert!(effects.is_empty(), "commands start no effect at once: {effects:?}");
        }
        self.take(effects);
        out
    }

    /// A Get: its status and Results items.
    pub fn get_all(&mut self, uri: &str) -> (StatusCode, Vec<Item>) {
        let mut tree = Tree::new(&self.reg, &mut self.state, &self.env);
        let out = tree.execute(&Command::Get(ItemCmd {
            cmd_id: "9".into(),
            items: vec![Item::target(uri)],
            ..Default::default()
        }));
        (out[0].code, out[0].results.clone())
    }

    /// The value a Get reads, when it answers 200.
    pub fn get(&mut self, uri: &str) -> Option<String> {
        match self.get_all(uri) {
            (StatusCode::Ok, items) => items.first().and_then(|i| i.data.clone()),
            _ => None,
        }
    }

    /// Moves the clock forward, running each timer at its own instant.
    pub fn advance(&mut self, d: Duration) {
        let until = self.env.now + d;
        for _ in 0..1000 {
            match self.reg.next_deadline(&mut self.state, &self.env) {
                Some(t) if t <= until => {
                    self.env.now = t.max(self.env.now);
                    let e = self.reg.on_deadline(&mut self.state, &self.env);
                    self.take(e);
                }
                _ => break,
            }
        }
        self.env.now = until;
    }

    /// Answers the oldest pending fetch.
    pub fn answer(&mut self, outcome: FetchOutcome) {
        assert!(!self.fetches.is_empty(), "no fetch was asked for");
        let (node, _) = self.fetches.remove(0);
        let e = self.reg.on_fetch(&mut self.state, &self.env, self.csp, &node, &outcome);
        self.take(e);
    }
}

/// (command name, status code) of each outcome.
pub fn codes(out: &[CmdOutcome]) -> Vec<(String, u16)> {
    out.iter().map(|o| (o.cmd.to_string(), o.code.code())).collect()
}
