//! Free text as clients send it: bounded in characters, and free of control characters (but
//! newlines and tabs in multi-line text), checked the same way by every service.

/// Checks free text: at most `max` characters, no control characters but newlines and tabs
/// when `multiline`.
pub fn check(value: &str, max: usize, multiline: bool) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    let bad = value
        .chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')));
    if bad {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Multi-line free text, trimmed, then checked; `required` refuses text that is empty once
/// trimmed.
pub fn trimmed(raw: &str, max: usize, required: bool) -> Result<String, String> {
    let trimmed = raw.trim();
    if required && trimmed.is_empty() {
        return Err("is required".into());
    }
    check(trimmed, max, true)?;
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_is_bounded_and_free_of_control_characters() {
        assert!(super::check("two\nlines", 20, true).is_ok());
        assert!(super::check("two\nlines", 20, false).is_err());
        assert!(super::check("bell\u{7}", 20, true).is_err());
        assert!(super::check("ééé", 3, false).is_ok(), "characters, not bytes");
        assert!(super::check("abcd", 3, false).is_err());
        assert_eq!(super::trimmed("  x ", 5, true).as_deref(), Ok("x"));
        assert!(super::trimmed("   ", 5, true).is_err());
        assert_eq!(super::trimmed("   ", 5, false).as_deref(), Ok(""));
    }
}
