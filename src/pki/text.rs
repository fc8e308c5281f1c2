//! Text that came from outside (a CSR, a manifest, a holder) and will be shown to a person.
//! A holder decides on what they read, so nothing in such text may move the cursor, recolour
//! the terminal, reverse the reading order or hide between letters: the server refuses
//! such text in requests, and every printer escapes it as a second line of defence.

/// Why a character must never reach a person's screen raw, or `None` if it may.
pub fn unsafe_char(c: char) -> Option<&'static str> {
    match c {
        '\u{1b}' => Some("an escape character (ANSI sequence)"),
        '\0'..='\u{1f}' | '\u{7f}' => Some("a control character"),
        '\u{80}'..='\u{9f}' => Some("a C1 control character"),
        '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
            Some("a bidirectional-text control")
        }
        '\u{200b}'..='\u{200d}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{180e}' => {
            Some("a zero-width character")
        }
        '\u{ad}' | '\u{34f}' | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' => {
            Some("an invisible character")
        }
        '\u{2028}' | '\u{2029}' => Some("a line or paragraph separator"),
        '\u{fff9}'..='\u{fffb}' => Some("an interlinear annotation control"),
        '\u{e0000}'..='\u{e007f}' => Some("a tag character"),
        '\u{fe00}'..='\u{fe0f}' | '\u{e0100}'..='\u{e01ef}' => Some("a variation selector"),
        _ => None,
    }
}

/// The first character of `text` that must not be shown raw: (position, character, why).
pub fn first_unsafe(text: &str) -> Option<(usize, char, &'static str)> {
    text.chars()
        .enumerate()
        .find_map(|(i, c)| unsafe_char(c).map(|why| (i, c, why)))
}

/// `text` with every character that must not be shown raw written as `\u{…}`, and
/// backslashes doubled, so the escaped form cannot be mistaken for the original.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if unsafe_char(c).is_some() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_tricks_are_named_and_escaped() {
        for (text, why) in [
            ("a\u{1b}[2Kb", "escape"),
            ("a\rb", "control"),
            ("a\u{9b}b", "C1"),
            ("evil\u{202e}gro.elpmaxe", "bidirectional"),
            ("ex\u{200b}ample", "zero-width"),
            ("a\u{2066}b", "bidirectional"),
            ("a\u{feff}b", "zero-width"),
        ] {
            let (_, _, found) = first_unsafe(text).unwrap();
            assert!(found.contains(why), "{text:?}: {found}");
            let shown = escape(text);
            assert!(first_unsafe(&shown).is_none(), "{shown:?}");
            assert!(shown.contains("\\u{"), "{shown:?}");
        }
    }

    #[test]
    fn ordinary_names_pass_unchanged() {
        for text in [
            "www.example.org",
            "Société Générale",
            "Zürich",
            "東京",
            "a b-c_d",
        ] {
            assert_eq!(first_unsafe(text), None);
            assert_eq!(escape(text), text);
        }
        assert_eq!(escape("a\\u{1b}"), "a\\\\u{1b}");
    }
}
