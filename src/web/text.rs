//! Text from outside (a CSR, a manifest, a holder, the audit log) made safe to show on a
//! page. maud escapes HTML; this makes every control, bidirectional or invisible character
//! visible, so what a person reads is what the bytes say.

use crate::pki::text::unsafe_char;

/// `s` as it may appear on a page: C0 controls and DEL as their Unicode control pictures
/// (`\u{1b}` → `␛`), every other character [`unsafe_char`] names as `\u{…}`, and, so that
/// the shown form cannot be forged, a backslash doubled and a raw control picture escaped.
pub fn shown(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\0'..='\u{1f}' => out.push(char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}')),
            '\u{7f}' => out.push('\u{2421}'),
            '\u{2400}'..='\u{2426}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c if unsafe_char(c).is_some() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The first `max` characters of `s` shown (see [`shown`]), with `…` when cut.
pub fn shown_short(s: &str, max: usize) -> String {
    let mut cut: String = s.chars().take(max).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    shown(&cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_become_visible() {
        assert_eq!(shown("a\u{1b}[2Kb"), "a␛[2Kb");
        assert_eq!(shown("line\r\nnext\0"), "line␍␊next␀");
        assert_eq!(shown("del\u{7f}"), "del␡");
    }

    #[test]
    fn bidi_and_invisible_characters_are_named() {
        assert_eq!(shown("evil\u{202e}gnp.exe"), "evil\\u{202e}gnp.exe");
        assert_eq!(shown("zero\u{200b}width"), "zero\\u{200b}width");
        assert_eq!(shown("c1\u{85}"), "c1\\u{85}");
    }

    #[test]
    fn the_shown_form_cannot_be_forged() {
        // a literal control picture or an escape-looking text is not shown as a control
        assert_eq!(shown("␛"), "\\u{241b}");
        assert_eq!(shown("\\u{1b}"), "\\\\u{1b}");
        assert_ne!(shown("\u{1b}"), shown("␛"));
    }

    #[test]
    fn html_is_left_to_the_template_and_plain_text_is_untouched() {
        let xss = "<img src=x onerror=alert(1)>";
        assert_eq!(shown(xss), xss);
        assert_eq!(shown("Zoë, Łódź 東京"), "Zoë, Łódź 東京");
        let page = maud::html! { p { (shown(&format!("{xss}\u{1b}"))) } }.into_string();
        assert_eq!(page, "<p>&lt;img src=x onerror=alert(1)&gt;␛</p>");
    }

    #[test]
    fn short_forms_are_cut_on_characters() {
        assert_eq!(shown_short("abcdef", 3), "abc…");
        assert_eq!(shown_short("é\u{1b}", 5), "é␛");
        assert_eq!(shown_short("ééé", 2), "éé…");
    }
}
