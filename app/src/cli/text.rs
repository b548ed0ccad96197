//! Text that comes from a database, a file or a user, made safe to print: a run's name, tags,
//! notes or failure reason could otherwise rewrite the screen or a terminal's title (ESC and OSC
//! sequences), hide what came before it (a carriage return), reorder a line (a right-to-left
//! override) or be long enough to break a table.

use shiftadd_core::store::manage::is_steering;

/// Characters of a name shown in a table (longer ones end in "…").
pub const NAME_CHARS: usize = 60;
/// Characters of any other line shown.
pub const LINE_CHARS: usize = 2000;

/// `s` with every character that would steer a terminal shown as its escape (`\u{1b}`), cut to
/// `max` characters with a closing "…".
pub fn shown(s: &str, max: usize) -> String {
    // Pieces (a character, or its escape) up to one past what fits: a 200,000-character name is
    // not escaped whole to show 60 characters of it.
    let mut pieces = Vec::new();
    let mut n = 0;
    for c in s.chars() {
        let piece = if is_steering(c) {
            format!("\\u{{{:x}}}", u32::from(c))
        } else {
            c.to_string()
        };
        n += piece.chars().count();
        pieces.push(piece);
        if n > max {
            break;
        }
    }
    if n <= max {
        return pieces.concat();
    }
    let mut out = String::new();
    let mut used = 0;
    for p in pieces {
        let len = p.chars().count();
        if used + len + 1 > max {
            break;
        }
        out.push_str(&p);
        used += len;
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn steering_characters_are_escaped_and_long_text_is_cut() {
        let hostile = "a\u{1b}]0;pwned\u{7}b\rc\0d\u{202e}e\u{9b}f";
        let s = shown(hostile, 200);
        assert_eq!(s, "a\\u{1b}]0;pwned\\u{7}b\\u{d}c\\u{0}d\\u{202e}e\\u{9b}f");
        assert!(!s.chars().any(char::is_control), "{s:?}");
        assert_eq!(shown("plain name", 200), "plain name");
        assert_eq!(
            shown("héllo wörld", 200),
            "héllo wörld",
            "letters are letters"
        );
        let long = "x".repeat(200_000);
        let cut = shown(&long, 60);
        assert_eq!(cut.chars().count(), 60);
        assert!(cut.ends_with('…'));
        assert_eq!(shown("abcdef", 6), "abcdef", "exactly max fits");
        assert_eq!(shown("abcdefg", 6), "abcde…");
        // An escape is never cut in half.
        assert_eq!(shown("ab\u{1b}", 6), "ab…");
    }
}
