//! "Did you mean": the closest of the names a key or a role reference could
//! have been, for messages about a likely typo.

/// The candidate closest to `given` (ASCII case-insensitively), when it is
/// close enough to be a typo: at most one edit in three characters.
pub fn closest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    let allowed = (given.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&given, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|&(distance, _)| distance <= allowed)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

/// A deserializer's "unknown field `x`, expected one of `a`, `b`" with
/// "did you mean `b`?" added when one of the expected keys is close.
pub fn unknown_field(message: String) -> String {
    const UNKNOWN: &str = "unknown field `";
    let Some(start) = message.find(UNKNOWN).map(|i| i + UNKNOWN.len()) else {
        return message;
    };
    let Some(len) = message[start..].find('`') else {
        return message;
    };
    let given = &message[start..start + len];
    let Some(expected) = message[start + len..].find("expected") else {
        return message;
    };
    let rest = &message[start + len + expected..];
    // The expected keys are the backquoted words that follow.
    let keys = rest.split('`').skip(1).step_by(2);
    match closest(given, keys) {
        Some(key) if key != given => format!("{message} (did you mean `{key}`?)"),
        _ => message,
    }
}

/// " (did you mean 'X'?)" for a role reference, or nothing.
pub fn role_hint<'a>(given: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    closest(given, names)
        .map(|name| format!(" (did you mean '{name}'?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_are_not() {
        let roles = [
            "Owner",
            "Contributor",
            "Reader",
            "User Access Administrator",
        ];
        assert_eq!(closest("Contributer", roles), Some("Contributor"));
        assert_eq!(closest("reeder", roles), Some("Reader"));
        assert_eq!(closest("Writer", roles), None);
        assert_eq!(closest("", roles), None);
    }

    #[test]
    fn an_unknown_key_gets_the_expected_key_it_resembles() {
        let message = "roleDefinitions[0].permissions[0]: unknown field `notAction`, expected one of `actions`, `notActions`, `dataActions`, `notDataActions`, `condition`, `conditionVersion` at line 8 column 55".to_owned();
        assert!(
            unknown_field(message.clone()).ends_with(" (did you mean `notActions`?)"),
            "{}",
            unknown_field(message)
        );
        let far = "unknown field `colour`, expected `id` or `type`".to_owned();
        assert_eq!(unknown_field(far.clone()), far);
        let other = "invalid type: string, expected a sequence".to_owned();
        assert_eq!(unknown_field(other.clone()), other);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_message(message in "\\PC{0,120}") {
            let _ = unknown_field(message);
        }
    }
}
