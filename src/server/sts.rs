//! The Federated authentication page of the reference server (the `AuthenticationServiceUrl` of
//! an MS-MDE2 DiscoverResponse with `AuthPolicy` Federated). Windows opens
//! `AuthenticationServiceUrl?appru=<ms-app://...>&login_hint=<e-mail>` in a web view; the page
//! ends by posting a security token as the form field `wresult` to `appru`, and the enrollment
//! client sends that token back, base64, as the WS-Security `BinarySecurityToken` of its
//! GetPolicies and RequestSecurityToken (Learn: "Federated authentication device enrollment").
//!
//! Owns the pages (a login form, the page that posts `wresult`, or a redirect, by the compat
//! switch `auth_page`) and the tokens it issued, each mapped to its user. No HTTP here: `mod.rs`
//! routes the requests; `enroll.rs` asks [`IssuedTokens::user`] when a token comes back.

use std::collections::HashMap;
use std::sync::Mutex;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::compat::AuthPage;
use super::config::Config;
use super::mgmt::fresh_nonce;
use super::xml::esc;

/// The path of the authentication page.
pub const AUTH_PATH: &str = "/EnrollmentServer/Auth";

/// What a query value must escape: everything but RFC 3986 unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The tokens this server issued, each with the user it stands for.
#[derive(Debug, Default)]
pub struct IssuedTokens {
    by_token: Mutex<HashMap<String, String>>,
}

impl IssuedTokens {
    /// A new random token for `user`.
    pub fn issue(&self, user: &str) -> String {
        let token = format!("mdmsim-sts-{}", hex::encode(fresh_nonce()));
        self.by_token.lock().unwrap_or_else(|e| e.into_inner()).insert(token.clone(), user.to_string());
        token
    }

    /// The user of a token this server issued.
    pub fn user(&self, token: &str) -> Option<String> {
        self.by_token.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned()
    }
}

/// What to answer a request to the authentication page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageReply {
    /// An HTML page with this HTTP status.
    Html { status: u16, body: String },
    /// A 302 to this location.
    Redirect(String),
    /// A 400 naming what is missing.
    BadRequest(String),
}

/// True for `local@domain.tld` (what discovery treats as a user's address).
pub fn email_shaped(text: &str) -> bool {
    let Some((local, domain)) = text.trim().split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| !label.is_empty())
        && !text.trim().chars().any(char::is_whitespace)
}

/// The web view's `GET AuthenticationServiceUrl?appru=...&login_hint=...`; `action` is the
/// page's own absolute URL (where the login form posts).
pub fn on_get(
    page: AuthPage,
    tokens: &IssuedTokens,
    action: &str,
    appru: Option<&str>,
    login_hint: Option<&str>,
) -> PageReply {
    let Some(appru) = appru.filter(|a| !a.trim().is_empty()) else {
        return PageReply::BadRequest("the appru query parameter (where to post wresult) is missing".into());
    };
    let hint = login_hint.map(str::trim).filter(|h| !h.is_empty());
    match page {
        AuthPage::LoginForm => {
            PageReply::Html { status: 200, body: login_form(action, appru, hint.unwrap_or_default(), None) }
        }
        AuthPage::AutoPost | AuthPage::Redirect => {
            // No login: the token is for whoever the hint names, as a page that trusts the
            // identity provider in front of it would do.
            let Some(user) = hint else {
                return PageReply::BadRequest("the login_hint query parameter (the user) is missing".into());
            };
            let token = tokens.issue(user);
            if page == AuthPage::Redirect {
                PageReply::Redirect(redirect_location(appru, &token))
            } else {
                PageReply::Html { status: 200, body: script_post_page(appru, &token) }
            }
        }
    }
}

/// The login form's POST (`username`, `password`, `appru`): the configured user's credentials
/// give the page that posts `wresult`; anything else gives the form again with an error.
pub fn on_post(config: &Config, tokens: &IssuedTokens, action: &str, fields: &HashMap<String, String>) -> PageReply {
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
    let appru = field("appru");
    if appru.trim().is_empty() {
        return PageReply::BadRequest("the form has no appru field (where to post wresult)".into());
    }
    let (username, password) = (field("username").trim(), field("password"));
    match config.users.iter().find(|u| u.name.eq_ignore_ascii_case(username) && u.password == password) {
        Some(user) => {
            let token = tokens.issue(&user.name);
            PageReply::Html { status: 200, body: wresult_page(appru, &token) }
        }
        None => PageReply::Html {
            status: 200,
            body: login_form(action, appru, username, Some("The user name or password is incorrect.")),
        },
    }
}

/// The login form: a text field for the user, a password field, and `appru` carried hidden.
fn login_form(action: &str, appru: &str, user: &str, error: Option<&str>) -> String {
    let error = error.map(|e| format!(r#"<p class="error" role="alert">{}</p>"#, esc(e))).unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in - mdmsim</title></head>
<body>
<h1>Sign in to enroll this device</h1>
{error}
<form method="post" action="{action}">
<input type="hidden" name="appru" value="{appru}">
<label>User <input type="email" name="username" value="{user}" autocomplete="username"></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<input type="submit" value="Sign in">
</form>
</body></html>
"#,
        action = esc(action),
        appru = esc(appru),
        user = esc(user),
    )
}

/// After a login: a form that posts the hidden field `wresult` to `appru`, and a script that
/// submits it at once (the web view never shows it).
fn wresult_page(appru: &str, token: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Signing in - mdmsim</title></head>
<body>
<form id="wresult-form" method="post" action="{appru}">
<input type="hidden" name="wresult" value="{token}">
<noscript><input type="submit" value="Continue"></noscript>
</form>
<script>document.getElementById('wresult-form').submit();</script>
</body></html>
"#,
        appru = esc(appru),
        token = esc(token),
    )
}

/// The shape of Fleet's page: nothing but a script that builds the same form (POST to `appru`,
/// hidden `wresult`), adds it to the document and submits it.
fn script_post_page(appru: &str, token: &str) -> String {
    format!(
        r#"<script>
function postToken() {{
  var form = document.createElement('form');
  form.method = 'POST';
  form.action = {appru};
  var field = document.createElement('input');
  field.type = 'hidden';
  field.name = 'wresult';
  field.value = {token};
  form.appendChild(field);
  document.body.appendChild(form);
  form.submit();
}}
postToken();
</script>
"#,
        appru = js_string(appru),
        token = js_string(token),
    )
}

/// A JavaScript string literal that cannot end the script element early.
fn js_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()).replace("</", "<\\/")
}

/// `appru` with `wresult=<token>` added to its query.
fn redirect_location(appru: &str, token: &str) -> String {
    let sep = if appru.contains('?') { '&' } else { '?' };
    format!("{appru}{sep}wresult={}", utf8_percent_encode(token, QUERY_VALUE))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPRU: &str = "ms-app://windows.immersivecontrolpanel";

    #[test]
    fn login_form_then_wresult_page_with_an_issued_token() {
        let tokens = IssuedTokens::default();
        let PageReply::Html { status: 200, body } =
            on_get(AuthPage::LoginForm, &tokens, "http://s/auth", Some(APPRU), Some("demo@mdmsim.test"))
        else {
            panic!("a login form")
        };
        assert!(body.contains(r#"<form method="post" action="http://s/auth">"#), "{body}");
        assert!(body.contains(r#"<input type="hidden" name="appru" value="ms-app://windows.immersivecontrolpanel">"#));
        assert!(body.contains(r#"name="username" value="demo@mdmsim.test""#) && body.contains(r#"type="password""#));

        let config = Config::default();
        let mut fields: HashMap<String, String> =
            [("appru", APPRU), ("username", "demo@mdmsim.test"), ("password", "wrong")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let PageReply::Html { body, .. } = on_post(&config, &tokens, "http://s/auth", &fields) else { panic!() };
        assert!(body.contains("incorrect") && body.contains(r#"name="password""#), "{body}");
        fields.insert("password".into(), "demo".into());
        let PageReply::Html { status: 200, body } = on_post(&config, &tokens, "http://s/auth", &fields) else {
            panic!()
        };
        let token = body.split(r#"name="wresult" value=""#).nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(tokens.user(token).as_deref(), Some("demo@mdmsim.test"));
        assert!(body.contains(&format!(r#"action="{APPRU}""#)) && body.contains(".submit()"));
        assert_eq!(tokens.user("mdmsim-sts-made-up"), None);
    }

    #[test]
    fn redirect_and_script_variants_need_the_hint() {
        let tokens = IssuedTokens::default();
        let PageReply::Redirect(to) = on_get(AuthPage::Redirect, &tokens, "a", Some(APPRU), Some("u@x.test")) else {
            panic!()
        };
        let token = to.strip_prefix(&format!("{APPRU}?wresult=")).unwrap();
        assert_eq!(tokens.user(token).as_deref(), Some("u@x.test"));
        assert!(matches!(on_get(AuthPage::Redirect, &tokens, "a", Some(APPRU), None), PageReply::BadRequest(_)));
        assert!(matches!(on_get(AuthPage::LoginForm, &tokens, "a", None, None), PageReply::BadRequest(_)));
        let PageReply::Html { body, .. } =
            on_get(AuthPage::AutoPost, &tokens, "a", Some("ms-app://x</script>"), Some("u@x.test"))
        else {
            panic!()
        };
        assert!(body.contains("field.name = 'wresult'") && body.contains(r#"form.action = "ms-app://x<\/script>""#));
    }

    #[test]
    fn email_shape() {
        assert!(email_shaped("demo@mdmsim.test"));
        for bad in ["demo", "@x.test", "a@b", "a@b.", "a b@c.d", "a@b@c.d"] {
            assert!(!email_shaped(bad), "{bad}");
        }
    }
}
