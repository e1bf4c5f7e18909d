//! The Federated sign-in web view of Windows enrollment, as data (MS-MDE2 §3.1.5.1, the
//! Federated authentication policy): Windows opens the discovery's `AuthenticationServiceUrl`
//! with `?appru=<ms-app URL>&login_hint=<UPN>` in a web view; the user signs in on whatever page
//! the server shows; the page finally posts a `wresult` security token to the `appru` URL (or
//! redirects there with it), and the enrollment client sends that token base64 in the
//! `wsse:BinarySecurityToken` of GetPolicies and RequestSecurityToken.
//!
//! This module reads one page and says what a person in front of the web view would do next:
//! take the token ([`Page::Token`]), fill in and submit a sign-in form ([`Page::Form`]), or give
//! up with what was found ([`Page::Unreadable`]). Moving the bytes, cookies and redirects is
//! `runner::enroll`'s.

use scraper::{ElementRef, Html, Selector};

/// The `appru` Windows passes to the authentication page: the Settings app that hosts the
/// enrollment web view.
pub const APPRU: &str = "ms-app://windows.immersivecontrolpanel";

/// The URL the web view opens: `auth_url` with `appru` and `login_hint` added to its query.
pub fn sign_in_url(auth_url: &str, email: &str) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    let sep = if auth_url.contains('?') { '&' } else { '?' };
    format!("{auth_url}{sep}appru={}&login_hint={}", enc(APPRU), enc(email))
}

/// The `wresult` token in a URL's query (a redirect to `appru?wresult=...`), if any.
pub fn wresult_in_url(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        if !k.eq_ignore_ascii_case("wresult") {
            return None;
        }
        let plus = v.replace('+', " ");
        let v = percent_encoding::percent_decode_str(&plus).decode_utf8_lossy().into_owned();
        (!v.is_empty()).then_some(v)
    })
}

/// A form to submit: where, how, and the fields with the values a person would type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormSubmit {
    /// `POST` or `GET`.
    pub method: String,
    /// The absolute URL the form goes to.
    pub action: String,
    /// Name and value of every field sent, in page order.
    pub fields: Vec<(String, String)>,
}

/// What the web view does with a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// The page hands back the security token (a `wresult` field, or a script that assigns it).
    Token(String),
    /// A sign-in form to fill in and submit.
    Form(FormSubmit),
    /// Nothing a person could act on: what the page holds, for the error message.
    Unreadable(String),
}

/// Reads a page fetched from `page_url`, signing in as `email` with `password` (`None` when the
/// user gave no password: a sign-in form is then unreadable for lack of one).
pub fn read_page(html: &str, page_url: &str, email: &str, password: Option<&str>) -> Page {
    let doc = Html::parse_document(html);
    let sel = |s: &str| Selector::parse(s).expect("a constant selector");
    // 1. The token page: a form field named wresult (Windows reads it from the form posted to
    //    appru), whatever the form's action.
    for input in doc.select(&sel("input, textarea")) {
        let name = input.value().attr("name").unwrap_or("");
        if name.eq_ignore_ascii_case("wresult") {
            let value = input.value().attr("value").map(str::to_string).unwrap_or_else(|| text_of(input));
            if !value.trim().is_empty() {
                return Page::Token(value.trim().to_string());
            }
        }
    }
    // 2. A script that assigns the token (`wresult = "..."`, `"wresult": "..."`).
    for script in doc.select(&sel("script")) {
        if let Some(t) = wresult_in_script(&text_of(script)) {
            return Page::Token(t);
        }
    }
    // 3. A sign-in form: the first form with a password field, else the only form.
    let forms: Vec<ElementRef<'_>> = doc.select(&sel("form")).collect();
    let login = forms
        .iter()
        .find(|f| {
            f.select(&sel("input")).any(|i| i.value().attr("type").is_some_and(|t| t.eq_ignore_ascii_case("password")))
        })
        .or(if forms.len() == 1 { forms.first() } else { None });
    if let Some(form) = login {
        let mut fields = Vec::new();
        let mut has_password = false;
        for input in form.select(&sel("input, select, textarea")) {
            let v = input.value();
            let Some(name) = v.attr("name").filter(|n| !n.is_empty()) else { continue };
            let ty = v.attr("type").unwrap_or("text").to_ascii_lowercase();
            let given = v.attr("value").unwrap_or("").to_string();
            let value = match ty.as_str() {
                "password" => {
                    has_password = true;
                    match password {
                        Some(p) => p.to_string(),
                        None => {
                            return Page::Unreadable(describe(
                                &doc,
                                page_url,
                                "a password field, and no --password was given",
                            ));
                        }
                    }
                }
                "submit" | "button" | "image" | "reset" | "file" => continue,
                "checkbox" | "radio" if v.attr("checked").is_none() => continue,
                "hidden" | "checkbox" | "radio" => given,
                // A user field: text/email with a name that says so, or any empty text field.
                _ if is_user_field(name) || given.is_empty() => email.to_string(),
                _ => given,
            };
            fields.push((name.to_string(), value));
        }
        if !has_password && fields.iter().all(|(n, _)| !is_user_field(n)) && forms.len() != 1 {
            return Page::Unreadable(describe(&doc, page_url, "a form with no user or password field"));
        }
        let action = form.value().attr("action").map(str::trim).filter(|a| !a.is_empty()).unwrap_or(page_url);
        let Some(action) = resolve(page_url, action) else {
            return Page::Unreadable(describe(&doc, page_url, &format!("a form whose action {action:?} is not a URL")));
        };
        let method = form.value().attr("method").unwrap_or("GET").to_ascii_uppercase();
        return Page::Form(FormSubmit { method: if method == "POST" { method } else { "GET".into() }, action, fields });
    }
    Page::Unreadable(describe(&doc, page_url, "no sign-in form and no wresult token"))
}

fn is_user_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["user", "login", "email", "mail", "upn", "account", "name"].iter().any(|k| n.contains(k))
}

fn text_of(el: ElementRef<'_>) -> String {
    el.text().collect()
}

/// The token a script assigns to `wresult`: the first quoted string after `wresult` and a `=`
/// or `:` (`wresult = "..."`, `{"wresult": "..."}`), or, when the script builds a form field
/// named `wresult`, the quoted string its `value` is set to (`field.name = 'wresult';
/// field.value = "..."`, the shape of Fleet's page).
fn wresult_in_script(script: &str) -> Option<String> {
    let lower = script.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("wresult") {
        let after = from + at + "wresult".len();
        if let Some(t) = assigned(script[after..].trim_start_matches(['"', '\'', ']', ' ', '\t'])) {
            return Some(t);
        }
        from = after;
    }
    // A field named wresult whose value is set further on.
    let named = lower.find("'wresult'").or_else(|| lower.find("\"wresult\""))?;
    let rest = &lower[named..];
    let v = rest.find("value")?;
    let start = named + v + "value".len();
    assigned(script[start..].trim_start_matches(['"', '\'', ' ', '\t']))
}

/// The quoted string of `= "..."` or `: '...'` at the start of `rest`.
fn assigned(rest: &str) -> Option<String> {
    let after = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':'))?.trim_start();
    let q = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &after[1..];
    let end = body.find(q)?;
    let t = body[..end].trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// `href` resolved against `base` (absolute URLs as they are, `/path` and relative paths).
fn resolve(base: &str, href: &str) -> Option<String> {
    if href.contains("://") {
        return Some(href.to_string());
    }
    let (scheme, rest) = base.split_once("://")?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..host_end]);
    if let Some(abs) = href.strip_prefix('/') {
        return Some(format!("{origin}/{abs}"));
    }
    let path = rest[host_end..].split(['?', '#']).next().unwrap_or("");
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    Some(format!("{origin}{dir}{href}"))
}

/// What a page holds, for the error: its title, its forms' actions and field names.
fn describe(doc: &Html, url: &str, problem: &str) -> String {
    let sel = |s: &str| Selector::parse(s).expect("a constant selector");
    let title: String = doc.select(&sel("title")).next().map(text_of).unwrap_or_default();
    let forms: Vec<String> = doc
        .select(&sel("form"))
        .map(|f| {
            let names: Vec<&str> = f.select(&sel("input")).filter_map(|i| i.value().attr("name")).collect();
            format!("form action={:?} fields [{}]", f.value().attr("action").unwrap_or(""), names.join(", "))
        })
        .collect();
    let title = title.trim().chars().take(80).collect::<String>();
    format!(
        "the page at {url} has {problem} (title {title:?}; {})",
        if forms.is_empty() { "no form".to_string() } else { forms.join("; ") }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://mdm.example.test/auth/login?appru=x";

    #[test]
    fn sign_in_url_carries_appru_and_the_login_hint() {
        assert_eq!(
            sign_in_url("https://s.test/auth", "a+b@example.com"),
            "https://s.test/auth?appru=ms%2Dapp%3A%2F%2Fwindows%2Eimmersivecontrolpanel&login_hint=a%2Bb%40example%2Ecom"
        );
        assert!(sign_in_url("https://s.test/auth?x=1", "u@e.test").starts_with("https://s.test/auth?x=1&appru="));
    }

    #[test]
    fn a_login_form_is_filled_with_the_user_and_password() {
        let html = r#"<html><head><title>Sign in</title></head><body>
            <form method="post" action="/auth/login">
              <input type="hidden" name="appru" value="ms-app://windows.immersivecontrolpanel">
              <input type="email" name="username" value="">
              <input type="password" name="password">
              <input type="checkbox" name="remember">
              <input type="submit" name="go" value="Sign in">
            </form></body></html>"#;
        let Page::Form(f) = read_page(html, URL, "u@example.com", Some("pw")) else { panic!() };
        assert_eq!(f.method, "POST");
        assert_eq!(f.action, "https://mdm.example.test/auth/login");
        assert_eq!(
            f.fields,
            vec![
                ("appru".to_string(), APPRU.to_string()),
                ("username".to_string(), "u@example.com".to_string()),
                ("password".to_string(), "pw".to_string()),
            ]
        );
        let Page::Unreadable(why) = read_page(html, URL, "u@example.com", None) else { panic!() };
        assert!(why.contains("--password") && why.contains("Sign in"), "{why}");
    }

    #[test]
    fn the_token_comes_from_a_wresult_field_a_script_or_a_redirect() {
        let html = r#"<form method="post" action="ms-app://windows.immersivecontrolpanel">
            <input type="hidden" name="wresult" value="tok-123"/></form>
            <script>document.forms[0].submit()</script>"#;
        assert_eq!(read_page(html, URL, "u", None), Page::Token("tok-123".into()));
        let script = r#"<script>var wresult = 'tok-456'; post(appru, wresult);</script>"#;
        assert_eq!(read_page(script, URL, "u", None), Page::Token("tok-456".into()));
        let json = r#"<script>send({"wresult": "tok-789"})</script>"#;
        assert_eq!(read_page(json, URL, "u", None), Page::Token("tok-789".into()));
        let built = r#"<script>var f = document.createElement('input'); f.type = 'hidden';
            f.name = 'wresult'; f.value = "tok-abc"; form.appendChild(f); form.submit();</script>"#;
        assert_eq!(read_page(built, URL, "u", None), Page::Token("tok-abc".into()));
        assert_eq!(
            wresult_in_url("ms-app://windows.immersivecontrolpanel?wresult=a%2Bb+c&x=1").as_deref(),
            Some("a+b c")
        );
        assert_eq!(wresult_in_url("ms-app://windows.immersivecontrolpanel?x=1"), None);
    }

    #[test]
    fn a_page_with_nothing_to_do_is_described() {
        let Page::Unreadable(why) = read_page("<title>Maintenance</title><p>Come back later</p>", URL, "u", Some("p"))
        else {
            panic!()
        };
        assert!(why.contains(URL) && why.contains("Maintenance") && why.contains("no form"), "{why}");
    }

    #[test]
    fn relative_actions_resolve_against_the_page() {
        assert_eq!(resolve(URL, "next").as_deref(), Some("https://mdm.example.test/auth/next"));
        assert_eq!(resolve(URL, "/x?y=1").as_deref(), Some("https://mdm.example.test/x?y=1"));
        assert_eq!(resolve(URL, "https://idp.test/a").as_deref(), Some("https://idp.test/a"));
    }
}
