//! Solace topics and queue names: what may be published to, how a subscription matches,
//! and how a Solace subscription translates to an MQTT topic filter. Shared by the Solace
//! adapter and the host's Solace endpoint, which translates its configured subscriptions.
//!
//! Solace topics are levels separated by `/`, at most 250 bytes and 128 levels, without
//! U+0000. In a subscription, `*` alone at a level matches any one level, `abc*` matches a
//! level that starts with `abc` (a `*` anywhere else in a level is invalid), and `>` alone
//! as the last level matches one or more further levels. `>` at any other place, and both
//! characters in a published topic, are literals.

use std::fmt;

/// The longest topic, subscription or queue name Solace accepts, in bytes.
pub const MAX_BYTES: usize = 250;
/// The most levels a Solace topic or subscription may have.
pub const MAX_LEVELS: usize = 128;

/// Why a Solace subscription is invalid, or cannot be translated to MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionError {
    /// The subscription is empty.
    Empty,
    /// Longer than [`MAX_BYTES`] bytes or more than [`MAX_LEVELS`] levels.
    TooLong,
    /// It holds U+0000, which ends a Solace string.
    Nul,
    /// A `*` that does not end its level (`a*b`, `*b`), which Solace refuses.
    MisplacedStar {
        /// The offending level.
        level: String,
    },
    /// A prefix wildcard (`abc*`): MQTT wildcards match whole levels only.
    PrefixWildcard {
        /// The offending level.
        level: String,
    },
    /// `>` alone at a level before the last. Solace reads it as a literal there; the
    /// translation refuses it because it is almost always a misplaced wildcard.
    InnerGreaterThan,
    /// A leading `!` (a subscription exception): MQTT cannot subscribe to "all but".
    Exception,
    /// A level holding `+` or `#`, literals in Solace but wildcards in MQTT (this also
    /// covers Solace's `#share/` and `#noexport/` prefixes).
    MqttWildcard {
        /// The offending level.
        level: String,
    },
}

impl fmt::Display for SubscriptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "the subscription is empty"),
            Self::TooLong => {
                write!(f, "the subscription is longer than {MAX_BYTES} bytes or has more than {MAX_LEVELS} levels")
            }
            Self::Nul => write!(f, "the subscription contains U+0000"),
            Self::MisplacedStar { level } => write!(f, "level `{level}`: `*` may only end a level"),
            Self::PrefixWildcard { level } => write!(
                f,
                "level `{level}` is a prefix wildcard, which MQTT cannot express: its wildcards match whole levels"
            ),
            Self::InnerGreaterThan => write!(
                f,
                "`>` is a wildcard only as the last level; Solace reads it literally before that, which the \
                 translation refuses as ambiguous"
            ),
            Self::Exception => write!(f, "a subscription exception (leading `!`) has no MQTT equivalent"),
            Self::MqttWildcard { level } => {
                write!(f, "level `{level}` holds `+` or `#`, which Solace reads literally but MQTT as wildcards")
            }
        }
    }
}

impl SubscriptionError {
    /// True when Solace itself refuses the subscription; false when it is valid Solace but
    /// MQTT cannot express it.
    #[must_use]
    pub fn is_invalid(&self) -> bool {
        match self {
            Self::Empty | Self::TooLong | Self::Nul | Self::MisplacedStar { .. } => true,
            Self::PrefixWildcard { .. } | Self::InnerGreaterThan | Self::Exception | Self::MqttWildcard { .. } => false,
        }
    }
}

impl std::error::Error for SubscriptionError {}

/// Checks the Solace syntax of a subscription: not empty, within the size limits, no
/// U+0000, and every `*` at the end of its level.
///
/// # Errors
/// The first problem found.
pub fn check_subscription(subscription: &str) -> Result<(), SubscriptionError> {
    if subscription.is_empty() {
        return Err(SubscriptionError::Empty);
    }
    if subscription.len() > MAX_BYTES || subscription.split('/').count() > MAX_LEVELS {
        return Err(SubscriptionError::TooLong);
    }
    if subscription.contains('\0') {
        return Err(SubscriptionError::Nul);
    }
    match subscription.split('/').find(|level| level.find('*').is_some_and(|at| at + 1 != level.len())) {
        Some(level) => Err(SubscriptionError::MisplacedStar { level: level.to_owned() }),
        None => Ok(()),
    }
}

/// Translates a Solace subscription to the MQTT topic filter that matches the same topics.
///
/// | Solace | MQTT | why |
/// |---|---|---|
/// | `a/b` | `a/b` | literal levels stay |
/// | `a/*/c` | `a/+/c` | `*` alone matches one level, like `+` |
/// | `a/>` | `a/+/#` | `>` matches one or more levels; `#` alone would also match `a` itself |
/// | `>` | `+/#` | every topic, by the same rule |
/// | `a/b>` | `a/b>` | `>` inside a level is a literal in both |
///
/// Refused, because MQTT has no equivalent or would read the subscription differently:
/// `abc*` ([`SubscriptionError::PrefixWildcard`]), `>` before the last level
/// ([`SubscriptionError::InnerGreaterThan`]), a leading `!`
/// ([`SubscriptionError::Exception`]), `+` or `#` in a level
/// ([`SubscriptionError::MqttWildcard`]), and whatever [`check_subscription`] refuses.
///
/// # Errors
/// A [`SubscriptionError`] saying what cannot be translated.
pub fn solace_subscription_to_mqtt(subscription: &str) -> Result<String, SubscriptionError> {
    check_subscription(subscription)?;
    if subscription.starts_with('!') {
        return Err(SubscriptionError::Exception);
    }
    let levels: Vec<&str> = subscription.split('/').collect();
    let mut filter = Vec::with_capacity(levels.len() + 1);
    for (i, level) in levels.iter().enumerate() {
        let last = i + 1 == levels.len();
        match *level {
            "*" => filter.push("+"),
            ">" if last => filter.extend(["+", "#"]),
            ">" => return Err(SubscriptionError::InnerGreaterThan),
            _ if level.contains(['+', '#']) => {
                return Err(SubscriptionError::MqttWildcard { level: (*level).to_owned() });
            }
            _ if level.ends_with('*') => {
                return Err(SubscriptionError::PrefixWildcard { level: (*level).to_owned() });
            }
            _ => filter.push(level),
        }
    }
    Ok(filter.join("/"))
}

/// True when `topic` matches the Solace subscription `pattern`: `*` alone matches any one
/// level, `abc*` a level starting with `abc` (including `abc` itself), `>` as the last level
/// one or more levels, and every other level only itself. The pattern is not validated: a
/// `*` that does not end its level, and `>` before the last level, compare literally.
#[must_use]
pub fn solace_topic_matches(pattern: &str, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    let mut pattern_levels = pattern.split('/').peekable();
    while let Some(wanted) = pattern_levels.next() {
        let last = pattern_levels.peek().is_none();
        if wanted == ">" && last {
            return topic_levels.next().is_some();
        }
        let Some(level) = topic_levels.next() else {
            return false;
        };
        let matched = match wanted.strip_suffix('*') {
            Some(prefix) => level.starts_with(prefix),
            None => wanted == level,
        };
        if !matched {
            return false;
        }
    }
    topic_levels.next().is_none()
}

/// Checks a topic to publish to: not empty, within the size limits, no U+0000, and no level
/// that looks like a wildcard (`*`, `abc*`, `>`). Solace would take such a level literally,
/// and advises against it; the adapter refuses it because a client that sends it almost
/// always meant a subscription.
///
/// # Errors
/// A message naming the topic and what is wrong with it.
pub fn check_topic(topic: &str) -> Result<(), String> {
    let problem = if topic.is_empty() {
        "is empty"
    } else if topic.len() > MAX_BYTES {
        "is longer than 250 bytes"
    } else if topic.split('/').count() > MAX_LEVELS {
        "has more than 128 levels"
    } else if topic.contains('\0') {
        "contains U+0000"
    } else if topic.split('/').any(|level| level == ">" || level.ends_with('*')) {
        "has a wildcard level (`*`, `abc*` or `>`), which only subscriptions may use"
    } else {
        return Ok(());
    };
    Err(format!("topic `{}` {problem}", topic.escape_debug()))
}

/// Checks a queue name: not empty, at most 250 bytes, no empty level, none of `'*<>&;` and
/// no control character.
///
/// # Errors
/// A message naming the queue and what is wrong with it.
pub fn check_queue(queue: &str) -> Result<(), String> {
    let problem = if queue.is_empty() {
        "is empty"
    } else if queue.len() > MAX_BYTES {
        "is longer than 250 bytes"
    } else if queue.split('/').any(str::is_empty) {
        "has an empty level"
    } else if queue.contains(|c: char| "'*<>&;".contains(c) || c.is_control()) {
        "contains one of '*<>&; or a control character"
    } else {
        return Ok(());
    };
    Err(format!("queue `{}` {problem}", queue.escape_debug()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translates_subscriptions_to_mqtt_filters() {
        let cases: [(&str, &str); 12] = [
            ("a/b/c", "a/b/c"),
            ("a/*/c", "a/+/c"),
            ("*", "+"),
            ("a/b/*", "a/b/+"),
            ("*/*", "+/+"),
            ("a/>", "a/+/#"),
            (">", "+/#"),
            ("*/>", "+/+/#"),
            ("a/b>", "a/b>"),
            ("a>/b", "a>/b"),
            ("a//b/", "a//b/"),
            ("$SYS/x", "$SYS/x"),
        ];
        for (solace, mqtt) in cases {
            assert_eq!(solace_subscription_to_mqtt(solace).as_deref(), Ok(mqtt), "{solace}");
        }
    }

    #[test]
    fn refuses_what_mqtt_cannot_express() {
        let level = |l: &str| l.to_owned();
        let long = "a".repeat(251);
        let deep = vec!["a"; 129].join("/");
        let cases: [(&str, SubscriptionError); 13] = [
            ("", SubscriptionError::Empty),
            (&long, SubscriptionError::TooLong),
            (&deep, SubscriptionError::TooLong),
            ("a/\0", SubscriptionError::Nul),
            ("a/b*c", SubscriptionError::MisplacedStar { level: level("b*c") }),
            ("*b/c", SubscriptionError::MisplacedStar { level: level("*b") }),
            ("a/b*", SubscriptionError::PrefixWildcard { level: level("b*") }),
            ("ab*/c", SubscriptionError::PrefixWildcard { level: level("ab*") }),
            ("a/>/c", SubscriptionError::InnerGreaterThan),
            ("!a/b", SubscriptionError::Exception),
            ("a/+/c", SubscriptionError::MqttWildcard { level: level("+") }),
            ("a/#", SubscriptionError::MqttWildcard { level: level("#") }),
            ("#share/group/a", SubscriptionError::MqttWildcard { level: level("#share") }),
        ];
        for (solace, error) in cases {
            assert_eq!(solace_subscription_to_mqtt(solace), Err(error), "{solace:?}");
        }
        assert_eq!(
            SubscriptionError::PrefixWildcard { level: level("ab*") }.to_string(),
            "level `ab*` is a prefix wildcard, which MQTT cannot express: its wildcards match whole levels"
        );
        let longest = "a".repeat(250);
        assert_eq!(solace_subscription_to_mqtt(&longest), Ok(longest.clone()));
    }

    #[test]
    fn matches_solace_subscriptions() {
        let cases: [(&str, &str, bool); 20] = [
            ("a/b/c", "a/b/c", true),
            ("a/b/c", "a/b", false),
            ("a/b", "a/b/c", false),
            ("a/*/c", "a/x/c", true),
            ("a/*/c", "a/x/y/c", false),
            ("a/*", "a", false),
            ("a/b*", "a/b", true),
            ("a/b*", "a/bcd", true),
            ("a/b*", "a/cb", false),
            ("a/b*/c", "a/bx/c", true),
            ("a/>", "a", false),
            ("a/>", "a/b", true),
            ("a/>", "a/b/c/d", true),
            (">", "x", true),
            (">", "x/y", true),
            ("a/>/c", "a/>/c", true),
            ("a/>/c", "a/b/c", false),
            ("a/b>", "a/b>", true),
            ("a/b>", "a/b/c", false),
            ("A/b", "a/b", false),
        ];
        for (pattern, topic, expected) in cases {
            assert_eq!(solace_topic_matches(pattern, topic), expected, "{pattern} ~ {topic}");
        }
    }

    /// MQTT 5 filter matching (section 4.7), to check that a translated filter matches
    /// exactly the topics its Solace subscription matches.
    fn mqtt_matches(filter: &str, topic: &str) -> bool {
        let mut levels = topic.split('/');
        for wanted in filter.split('/') {
            if wanted == "#" {
                return true;
            }
            match levels.next() {
                Some(level) if wanted == "+" || wanted == level => {}
                _ => return false,
            }
        }
        levels.next().is_none()
    }

    #[test]
    fn translated_filters_match_the_same_topics() {
        let subscriptions = ["a/b/c", "a/*/c", "*", "a/>", ">", "*/>", "a/*/>", "a/b>", "a//c"];
        let topics = ["a", "a/b", "a/b/c", "a/x/c", "a/b/c/d", "b", "b/c", "a//c", "a/b>", "x/y/z", "a/", ""];
        for subscription in subscriptions {
            let filter = solace_subscription_to_mqtt(subscription).expect("translatable");
            for topic in topics {
                assert_eq!(
                    mqtt_matches(&filter, topic),
                    solace_topic_matches(subscription, topic),
                    "{subscription} → {filter} on {topic:?}"
                );
            }
        }
    }

    #[test]
    fn checks_publish_topics_and_queue_names() {
        assert_eq!(check_topic("orders/eu/created"), Ok(()));
        assert_eq!(check_topic("a/b+c/#x"), Ok(()), "MQTT wildcards are Solace literals");
        assert_eq!(
            check_topic("orders/*"),
            Err("topic `orders/*` has a wildcard level (`*`, `abc*` or `>`), which only subscriptions may use".into())
        );
        assert!(check_topic("orders/eu*/x").is_err());
        assert!(check_topic("orders/>").is_err());
        assert_eq!(check_topic(""), Err("topic `` is empty".into()));
        assert_eq!(check_topic(&"t".repeat(251)), Err(format!("topic `{}` is longer than 250 bytes", "t".repeat(251))));
        assert_eq!(check_topic("a\0"), Err("topic `a\\0` contains U+0000".into()));

        assert_eq!(check_queue("orders/eu"), Ok(()));
        assert_eq!(check_queue("orders//eu"), Err("queue `orders//eu` has an empty level".into()));
        assert_eq!(check_queue("q;drop"), Err("queue `q;drop` contains one of '*<>&; or a control character".into()));
        assert!(check_queue("").is_err());
        assert!(check_queue("q\n").is_err());
    }
}
