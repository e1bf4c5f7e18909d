//! The reference server's compatibility mode: the `fleet` and `minimal` presets and single
//! `[compat]` switches, driven by hand-written SOAP, HTML form posts and SyncML over plain HTTP
//! on 127.0.0.1, asserting what a client sees.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::{X509NameBuilder, X509ReqBuilder};

use mdmsim::server::{self, Config, Preset, ServerHandle, ServerOptions};
use mdmsim::syncml::{self, Command, SyncMl};

use super::support::mdmsim;

const DEV: &str = "0123456789ABCDEF0123456789ABCDEF";
const USER: &str = "demo@mdmsim.test";
const APPRU: &str = "ms-app://windows.immersivecontrolpanel";
const USER_TOKEN: &str =
    "http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentUserToken";

/// One user, one inventory read, one DMClient setting: enough for a session with commands.
const BASE: &str = r#"
[management]
auth = "none"
inventory = ["./DevDetail/SwV"]
[dmclient.poll]
NumberOfFirstRetries = 0
[[users]]
name = "demo@mdmsim.test"
password = "demo"
"#;

async fn start(config: &str) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOptions::local(dir.path());
    opts.http = true;
    opts.config = Config::parse(config, "compat-test.toml").unwrap_or_else(|e| panic!("{e}"));
    (server::start(opts).await.unwrap(), dir)
}

/// The same server with a preset chosen in process (what a test that builds its Config does).
async fn start_preset(preset: Preset) -> (ServerHandle, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServerOptions::local(dir.path());
    opts.http = true;
    let mut config = Config::parse(BASE, "compat-test.toml").unwrap();
    config.compat.preset = preset;
    opts.config = config;
    (server::start(opts).await.unwrap(), dir)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

// ---- SyncML ----

async fn post(c: &reqwest::Client, h: &ServerHandle, xml: &str) -> Option<SyncMl> {
    super::support::post_syncml(c, h, "Maintenance", xml).await
}

/// The raw text of a reply (to look for `<Final/>` as written).
async fn post_raw(c: &reqwest::Client, h: &ServerHandle, xml: &str) -> String {
    let resp = c.post(h.management_url()).body(xml.to_string()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

fn hdr(session: &str, msg: u32, cred: &str) -> String {
    format!(
        "<SyncHdr><VerDTD>1.2</VerDTD><VerProto>DM/1.2</VerProto><SessionID>{session}</SessionID><MsgID>{msg}</MsgID>\
         <Target><LocURI>https://mdm.test/ManagementServer/MDM.svc</LocURI></Target><Source><LocURI>{DEV}</LocURI></Source>{cred}</SyncHdr>"
    )
}

fn pkg1(session: &str, cred: &str) -> String {
    format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2">{}<SyncBody>
 <Alert><CmdID>1</CmdID><Data>1201</Data></Alert>
 <Alert><CmdID>2</CmdID><Data>1224</Data><Item><Meta><Type xmlns="syncml:metinf">com.microsoft/MDM/LoginStatus</Type></Meta><Data>user</Data></Item></Alert>
 <Replace><CmdID>3</CmdID><Item><Source><LocURI>./DevInfo/DevId</LocURI></Source><Data>{DEV}</Data></Item></Replace>
 <Final/></SyncBody></SyncML>"#,
        hdr(session, 1, cred)
    )
}

/// The device's answer to our message `server_msg`: SyncHdr Status, then `body`.
fn answer(session: &str, msg: u32, server_msg: &str, body: &str) -> String {
    format!(
        r#"<SyncML xmlns="SYNCML:SYNCML1.2">{}<SyncBody><Status><CmdID>1</CmdID><MsgRef>{server_msg}</MsgRef><CmdRef>0</CmdRef><Cmd>SyncHdr</Cmd><Data>200</Data></Status>{body}<Final/></SyncBody></SyncML>"#,
        hdr(session, msg, "")
    )
}

/// A Status of 200 for each of the server's commands in `m`.
fn statuses_for(m: &SyncMl) -> String {
    ours(m)
        .iter()
        .enumerate()
        .map(|(n, c)| {
            format!(
                "<Status><CmdID>{}</CmdID><MsgRef>{}</MsgRef><CmdRef>{}</CmdRef><Cmd>{}</Cmd><Data>200</Data></Status>",
                n + 2,
                m.hdr.msg_id,
                c.cmd_id(),
                c.name()
            )
        })
        .collect()
}

fn ours(m: &SyncMl) -> Vec<&Command> {
    m.body.commands.iter().filter(|c| !matches!(c, Command::Status(_))).collect()
}

fn status_cmds(m: &SyncMl) -> Vec<String> {
    m.body.commands.iter().filter_map(|c| if let Command::Status(s) = c { Some(s.cmd.clone()) } else { None }).collect()
}

// ---- SOAP ----

fn soap(action: &str, to: &str, security: &str, body: &str) -> String {
    format!(
        r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://www.w3.org/2005/08/addressing"><s:Header><a:Action s:mustUnderstand="1">{action}</a:Action><a:MessageID>urn:uuid:748132ec-a575-4329-b01b-6171a9cf8478</a:MessageID><a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo><a:To s:mustUnderstand="1">{to}</a:To>{security}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

fn username_token(user: &str, password: &str) -> String {
    format!(
        r#"<wsse:Security s:mustUnderstand="1" xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"><wsse:UsernameToken><wsse:Username>{user}</wsse:Username><wsse:Password wsse:Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText">{password}</wsse:Password></wsse:UsernameToken></wsse:Security>"#
    )
}

/// The WS-Security header of a Federated enrollment: base64 of the `wresult` token.
fn user_token(token: &str) -> String {
    format!(
        r#"<wsse:Security s:mustUnderstand="1" xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"><wsse:BinarySecurityToken ValueType="{USER_TOKEN}" EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary">{}</wsse:BinarySecurityToken></wsse:Security>"#,
        B64.encode(token)
    )
}

fn discover(h: &ServerHandle, email: &str) -> String {
    soap(
        "http://schemas.microsoft.com/windows/management/2012/01/enrollment/IDiscoveryService/Discover",
        &h.discovery_url(),
        "",
        &format!(
            r#"<Discover xmlns="http://schemas.microsoft.com/windows/management/2012/01/enrollment"><request xmlns:i="http://www.w3.org/2001/XMLSchema-instance"><EmailAddress>{email}</EmailAddress><RequestVersion>4.0</RequestVersion><DeviceType>CIMClient_Windows</DeviceType><ApplicationVersion>10.0.19045.2006</ApplicationVersion><OSEdition>48</OSEdition><AuthPolicies><AuthPolicy>OnPremise</AuthPolicy><AuthPolicy>Federated</AuthPolicy></AuthPolicies></request></Discover>"#
        ),
    )
}

fn get_policies(url: &str, security: &str) -> String {
    soap(
        "http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy/IPolicy/GetPolicies",
        url,
        security,
        r#"<GetPolicies xmlns="http://schemas.microsoft.com/windows/pki/2009/01/enrollmentpolicy"><client><lastUpdate xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/><preferredLanguage xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></client><requestFilter xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></GetPolicies>"#,
    )
}

fn rst(url: &str, security: &str) -> String {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, &format!("B1C43CD0!{DEV}")).unwrap();
    let mut b = X509ReqBuilder::new().unwrap();
    b.set_subject_name(&name.build()).unwrap();
    b.set_pubkey(&key).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let csr = B64.encode(b.build().to_der().unwrap());
    soap(
        "http://schemas.microsoft.com/windows/pki/2009/01/enrollment/RST/wstep",
        url,
        security,
        &format!(
            r#"<wst:RequestSecurityToken xmlns:wst="http://docs.oasis-open.org/ws-sx/ws-trust/200512" xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" xmlns:ac="http://schemas.xmlsoap.org/ws/2006/12/authorization"><wst:TokenType>http://schemas.microsoft.com/5.0.0.0/ConfigurationManager/Enrollment/DeviceEnrollmentToken</wst:TokenType><wst:RequestType>http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue</wst:RequestType><wsse:BinarySecurityToken ValueType="http://schemas.microsoft.com/windows/pki/2009/01/enrollment#PKCS10" EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#base64binary">{csr}</wsse:BinarySecurityToken><ac:AdditionalContext><ac:ContextItem Name="EnrollmentType"><ac:Value>Full</ac:Value></ac:ContextItem><ac:ContextItem Name="DeviceID"><ac:Value>{DEV}</ac:Value></ac:ContextItem></ac:AdditionalContext></wst:RequestSecurityToken>"#
        ),
    )
}

async fn soap_post(c: &reqwest::Client, url: &str, body: String) -> (u16, String) {
    let r = c.post(url).header("Content-Type", "application/soap+xml; charset=utf-8").body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// Every `parm` value of this name in the document, in order.
fn parms(doc: &str, name: &str) -> Vec<String> {
    let key = format!(r#"<parm name="{name}" value=""#);
    doc.match_indices(&key).map(|(i, _)| doc[i + key.len()..].split('"').next().unwrap().to_string()).collect()
}

/// Enrolls DEV with `security`; returns the provisioning document.
async fn enroll(c: &reqwest::Client, h: &ServerHandle, security: &str) -> String {
    let url = format!("{}/EnrollmentServer/Enrollment.svc", h.base_url);
    let (status, body) = soap_post(c, &url, rst(&url, security)).await;
    assert_eq!(status, 200, "{body}");
    let token = between(&body, "DeviceEnrollmentProvisionDoc", "</BinarySecurityToken>").unwrap();
    String::from_utf8(B64.decode(&token[token.find('>').unwrap() + 1..]).unwrap()).unwrap()
}

/// The web view's first URL: the page with `appru` and `login_hint` in its query.
fn signin(page: &str) -> String {
    let enc = |v: &str| percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string();
    format!("{page}?appru={}&login_hint={}", enc(APPRU), enc(USER))
}

/// The login form submitted as a browser does (urlencoded), with `password`.
fn login(c: &reqwest::Client, page: &str, password: &str) -> reqwest::RequestBuilder {
    let enc = |v: &str| percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string();
    c.post(page).header("Content-Type", "application/x-www-form-urlencoded").body(format!(
        "appru={}&username={}&password={}",
        enc(APPRU),
        enc(USER),
        enc(password)
    ))
}

/// An HTML input's `value`, found by its `name`.
fn input_value<'a>(html: &'a str, name: &str) -> Option<&'a str> {
    let at = html.find(&format!(r#"name="{name}""#))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>')?];
    between(tag, r#"value=""#, "\"")
}

// ---- tests ----

#[tokio::test]
async fn fleet_preset_sends_aauthdata_nonce_uuid_cmd_ids_no_final_and_status_only_replies() {
    let config = format!("{BASE}\n[compat]\npreset = \"fleet\"\n").replace("auth = \"none\"", "auth = \"md5\"");
    let (h, _dir) = start(&config).await;
    let c = client();

    // The provisioning document: AAUTHDATA is the word "nonce" in both APPAUTH blocks.
    let doc = enroll(&c, &h, &username_token(USER, "demo")).await;
    assert_eq!(parms(&doc, "AAUTHLEVEL"), ["CLIENT", "APPSRV"]);
    assert_eq!(parms(&doc, "AAUTHDATA"), ["nonce", "nonce"], "{doc}");
    let appsrv = &doc[doc.find(r#"value="APPSRV""#).unwrap()..];
    let (name, secret) = (parms(appsrv, "AAUTHNAME")[0].clone(), parms(appsrv, "AAUTHSECRET")[0].clone());

    // A device that digests the five bytes of "nonce" is trusted on its first message.
    let cred = format!(
        r#"<Cred><Meta><Type xmlns="syncml:metinf">syncml:auth-md5</Type><Format xmlns="syncml:metinf">b64</Format></Meta><Data>{}</Data></Cred>"#,
        server::md5_digest(&name, &secret, b"nonce")
    );
    let raw = post_raw(&c, &h, &pkg1("1", &cred)).await;
    assert!(!raw.contains("Final"), "no <Final/> on a command message:\n{raw}");
    let m = syncml::decode(&raw).unwrap();
    assert!(!m.body.final_);
    let Command::Status(st) = &m.body.commands[0] else { panic!("the SyncHdr Status first") };
    assert_eq!((st.cmd.as_str(), st.data.as_str()), ("SyncHdr", "200"), "{raw}");
    assert_eq!(status_cmds(&m), ["SyncHdr", "Replace"], "Fleet gives the Alerts no Status");
    let cmds = ours(&m);
    assert_eq!(cmds.iter().map(|c| c.name()).collect::<Vec<_>>(), ["Get", "Add"]);
    for id in m.body.commands.iter().map(Command::cmd_id) {
        assert!(uuid::Uuid::parse_str(id).is_ok(), "CmdID {id:?} is not a UUID");
    }

    // The device's Statuses: a message with only our Statuses and no Final ends the session.
    let mut last = answer("1", 2, "1", &statuses_for(&m));
    last = last.replace("</SyncHdr>", &format!("{cred}</SyncHdr>"));
    let raw = post_raw(&c, &h, &last).await;
    assert!(!raw.is_empty() && !raw.contains("Final"), "{raw}");
    let end = syncml::decode(&raw).unwrap();
    assert!(ours(&end).is_empty(), "{raw}");
    assert_eq!(status_cmds(&end), ["SyncHdr"]);
    assert_eq!(end.hdr.msg_id, "2");
    let rec = h.device(DEV).unwrap();
    assert!(rec.checkins[0].completed && rec.findings.is_empty(), "{:?}", rec.findings);

    // Answering that message is a finding, answered with nothing.
    let extra = answer("1", 3, "2", "").replace("</SyncHdr>", &format!("{cred}</SyncHdr>"));
    assert!(post(&c, &h, &extra).await.is_none());
    let f = h.device(DEV).unwrap().findings;
    assert!(f.iter().any(|x| x.contains("answered our message that had no commands")), "{f:?}");

    // Fleet's SOAP faults come in an HTTP 200.
    let url = format!("{}/EnrollmentServer/Enrollment.svc", h.base_url);
    let (status, body) = soap_post(&c, &url, rst(&url, &username_token(USER, "wrong"))).await;
    assert_eq!(status, 200);
    assert!(body.contains("<s:Value>s:Authentication</s:Value>"), "{body}");
}

#[tokio::test]
async fn minimal_preset_numbers_cmd_ids_and_answers_get_policies_with_a_nil_response() {
    let (h, _dir) = start_preset(Preset::Minimal).await;
    let c = client();
    let url = format!("{}/EnrollmentServer/Policy.svc", h.base_url);
    let (status, body) = soap_post(&c, &url, get_policies(&url, &username_token(USER, "demo"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#"<response xsi:nil="true"/>"#), "{body}");
    assert!(!body.contains("xmlns:xsi"), "the xsi prefix is never declared: {body}");
    assert!(!body.contains("minimalKeyLength"));
    // Still authenticated first.
    let (status, body) = soap_post(&c, &url, get_policies(&url, &username_token(USER, "wrong"))).await;
    assert_eq!(status, 500);
    assert!(body.contains("s:Authentication"), "{body}");

    let m = post(&c, &h, &pkg1("7", "")).await.unwrap();
    let ids: Vec<&str> = m.body.commands.iter().map(Command::cmd_id).collect();
    let expected: Vec<String> = (1..=ids.len()).map(|n| n.to_string()).collect();
    assert_eq!(ids, expected, "numbered from 1 within the message");
    assert!(m.body.final_);
    assert_eq!(status_cmds(&m), ["SyncHdr", "Alert", "Alert", "Replace"]);
    assert!(post(&c, &h, &answer("7", 2, "1", &statuses_for(&m))).await.is_none(), "empty body at the end");
    let rec = h.device(DEV).unwrap();
    assert!(rec.results.iter().all(|r| r.status == 200) && rec.results.len() == 2, "{:?}", rec.results);
    assert!(rec.findings.is_empty(), "{:?}", rec.findings);
}

#[tokio::test]
async fn federated_discovery_sign_in_page_and_its_token_at_get_policies_and_rst() {
    let (h, _dir) = start(&format!("{BASE}\n[compat]\nfederated = true\n")).await;
    let c = client();

    // Discovery: Federated with our sign-in page for an e-mail address; OnPremise otherwise.
    let (status, body) = soap_post(&c, &h.discovery_url(), discover(&h, "anyone@contoso.example")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(between(&body, "<AuthPolicy>", "<"), Some("Federated"));
    let auth_url = between(&body, "<AuthenticationServiceUrl>", "<").unwrap().to_string();
    assert_eq!(auth_url, format!("{}{}", h.base_url, server::AUTH_PATH));
    let (_, body) = soap_post(&c, &h.discovery_url(), discover(&h, "not-an-address")).await;
    assert_eq!(between(&body, "<AuthPolicy>", "<"), Some("OnPremise"));
    assert!(!body.contains("AuthenticationServiceUrl"));

    // The web view's GET: a login form posting back to the page, appru carried hidden.
    let r = c.get(signin(&auth_url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let form = r.text().await.unwrap();
    assert!(form.contains(&format!(r#"<form method="post" action="{auth_url}">"#)), "{form}");
    assert_eq!(input_value(&form, "appru"), Some(APPRU));
    assert_eq!(input_value(&form, "username"), Some(USER));
    assert!(form.contains(r#"type="password" name="password""#), "{form}");
    // No appru: a 400.
    assert_eq!(c.get(&auth_url).send().await.unwrap().status(), 400);

    // Wrong credentials: the form again, with an error.
    let r = login(&c, &auth_url, "nope").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let again = r.text().await.unwrap();
    assert!(again.contains("incorrect") && again.contains(r#"name="password""#), "{again}");
    assert!(!again.contains("wresult"));

    // The configured user's credentials: a page that posts wresult to appru, by itself.
    let r = login(&c, &auth_url, "demo").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains(&format!(r#"method="post" action="{APPRU}""#)), "{page}");
    assert!(page.contains("<script>") && page.contains(".submit()"), "{page}");
    let token = input_value(&page, "wresult").expect("a hidden wresult field").to_string();
    assert!(page.contains(&format!(r#"<input type="hidden" name="wresult" value="{token}">"#)));

    // The token, base64 in a DeviceEnrollmentUserToken, opens GetPolicies and RST for that user.
    let policy = format!("{}/EnrollmentServer/Policy.svc", h.base_url);
    let (status, body) = soap_post(&c, &policy, get_policies(&policy, &user_token(&token))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<minimalKeyLength>2048</minimalKeyLength>"));
    let doc = enroll(&c, &h, &user_token(&token)).await;
    assert_eq!(parms(&doc, "UPN"), [USER]);
    assert_eq!(h.device(DEV).unwrap().enrollment.unwrap().user, USER);

    // A made-up token is refused with an Authentication fault.
    let (status, body) = soap_post(&c, &policy, get_policies(&policy, &user_token("mdmsim-sts-made-up"))).await;
    assert_eq!(status, 500);
    assert!(body.contains("<s:Value>s:Authentication</s:Value>") && body.contains("80180002"), "{body}");
    let enroll_url = format!("{}/EnrollmentServer/Enrollment.svc", h.base_url);
    let (status, body) = soap_post(&c, &enroll_url, rst(&enroll_url, &user_token("forged"))).await;
    assert_eq!(status, 500);
    assert!(body.contains("s:Authentication"), "{body}");
}

#[tokio::test]
async fn the_redirect_variant_answers_the_get_with_a_302_carrying_wresult() {
    let (h, _dir) = start(&format!("{BASE}\n[compat]\nfederated = true\nauth_page = \"redirect\"\n")).await;
    let c = client();
    let auth_url = format!("{}{}", h.base_url, server::AUTH_PATH);
    let r = c.get(signin(&auth_url)).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let token = location.strip_prefix(&format!("{APPRU}?wresult=")).unwrap_or_else(|| panic!("{location}"));
    let token = percent_encoding::percent_decode_str(token).decode_utf8().unwrap().into_owned();
    enroll(&c, &h, &user_token(&token)).await;
    assert_eq!(h.device(DEV).unwrap().enrollment.unwrap().user, USER);

    // The script-only page (the shape of Fleet's) also carries a token for the hint.
    let (h2, _dir2) = start(&format!("{BASE}\n[compat]\nfederated = true\nauth_page = \"auto-post\"\n")).await;
    let url2 = format!("{}{}", h2.base_url, server::AUTH_PATH);
    let page = c.get(signin(&url2)).send().await.unwrap().text().await.unwrap();
    assert!(page.trim_start().starts_with("<script>") && page.contains("'wresult'"), "{page}");
    let token = between(&page, "field.value = \"", "\"").unwrap().to_string();
    enroll(&c, &h2, &user_token(&token)).await;
    // A token of one server means nothing to another.
    let url = format!("{}/EnrollmentServer/Enrollment.svc", h.base_url);
    let (status, _) = soap_post(&c, &url, rst(&url, &user_token(&token))).await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn an_empty_reply_to_package_1_when_the_switch_is_on() {
    let (h, _dir) = start(&format!("{BASE}\n[compat]\nempty_reply_to_package1 = true\n")).await;
    let c = client();
    assert!(post(&c, &h, &pkg1("3", "")).await.is_none());
    let ci = &h.device(DEV).unwrap().checkins[0];
    assert_eq!((ci.alert, ci.commands_sent, ci.completed), (Some(1201), 0, true));
}

#[tokio::test]
async fn the_standard_preset_keeps_final_onpremise_discovery_and_base64_nonces() {
    let (h, _dir) = start_preset(Preset::Standard).await;
    let c = client();
    let (_, body) = soap_post(&c, &h.discovery_url(), discover(&h, USER)).await;
    assert_eq!(between(&body, "<AuthPolicy>", "<"), Some("OnPremise"));
    assert!(!body.contains("AuthenticationServiceUrl"));
    let auth_url = format!("{}{}", h.base_url, server::AUTH_PATH);
    let r = c.get(signin(&auth_url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "the page exists, but discovery never points at it");
    let doc = enroll(&c, &h, &username_token(USER, "demo")).await;
    for nonce in parms(&doc, "AAUTHDATA") {
        assert_eq!(B64.decode(&nonce).unwrap().len(), 16, "{nonce}");
    }
    let m = post(&c, &h, &pkg1("1", "")).await.unwrap();
    assert!(m.body.final_);
    assert_eq!(status_cmds(&m), ["SyncHdr", "Alert", "Alert", "Replace"]);
    assert!(post(&c, &h, &answer("1", 2, "1", &statuses_for(&m))).await.is_none());
}

#[test]
fn the_cli_takes_a_preset_and_the_shipped_example_config_parses() {
    let (code, _, err) = mdmsim(&["server", "--http", "--listen", "127.0.0.1:0", "--compat", "intune"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("standard, fleet, minimal"), "{err}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/server/compat.toml");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.compat.preset, Preset::Fleet);
    let c = config.compat();
    assert!(c.federated && c.aauthdata_nonce && !c.final_);
}
