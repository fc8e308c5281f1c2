//! The frame every page shares: head (stylesheet, script, icon), the navigation and the
//! sign-out button, and the small pieces pages repeat (an error box, a time, a key/value
//! table).

use super::auth::{SignedIn, csrf_field};
use maud::{DOCTYPE, Markup, html};

/// A whole page: `title`, the navigation when signed in, and `body`.
pub fn page(title: &str, user: Option<&SignedIn>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · nkpki" }
                link rel="stylesheet" href="/static/app.css";
                link rel="icon" type="image/svg+xml" href="/static/icon.svg";
                script src="/static/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/ui/" {
                        img src="/static/icon.svg" alt="" width="24" height="24";
                        " nkpki"
                    }
                    @if let Some(user) = user {
                        nav aria-label="Main" {
                            a href="/ui/" { "Overview" }
                            a href="/ui/requests/new" { "New request" }
                            a href="/ui/generator" { "New CA" }
                            a href="/ui/audit" { "Audit" }
                        }
                        form.sign-out method="post" action="/ui/sign-out" {
                            (csrf_field(user))
                            span.who { (super::text::shown(&user.operator)) }
                            button type="submit" id="sign-out" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
                footer { "nkpki " (env!("CARGO_PKG_VERSION")) }
            }
        }
    }
}

/// A page-level error (what the browser tests look for).
pub fn error_box(message: &str) -> Markup {
    html! { div.error role="alert" { (message) } }
}

/// An error shown beside form field `field`.
pub fn field_error(field: &str, message: &str) -> Markup {
    html! { p.field-error id={ (field) "-error" } { (message) } }
}

/// Unix seconds as `2026-11-29 20:31:05 UTC`, in a `<time>` element.
pub fn when(unix: i64) -> Markup {
    let text = time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(|t| t.replacen('T', " ", 1).replace('Z', " UTC"))
        .unwrap_or_else(|| unix.to_string());
    html! { time datetime=(unix) { (text) } }
}

/// A duration in seconds, roughly: `45 s`, `12 min`, `3 h`, `5 d`.
pub fn ago(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

/// Rows of (label, value) as a definition table.
pub fn facts(rows: &[(&str, Markup)]) -> Markup {
    html! {
        dl.facts {
            @for (label, value) in rows {
                dt { (label) }
                dd { (value) }
            }
        }
    }
}
