//! Email templates: a subject, a text part and an HTML part in MiniJinja (Jinja2's language),
//! rendered with the event as a webhook carries it (`type`, `timestamp`, `eventId`, `subject`,
//! `data`: the payload, and with it the record the event is about) and the rule
//! (`rule.display_name`). The HTML part is escaped automatically; each render has a bounded
//! amount of work (fuel), so no template can run for long.

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};

/// Longest subject template, in characters.
pub const MAX_SUBJECT: usize = 1000;
/// Longest text or HTML template, in characters.
pub const MAX_BODY: usize = 100_000;
/// Longest rendered subject kept (a longer one is cut).
const MAX_RENDERED_SUBJECT: usize = 998;
/// Work one render may do (MiniJinja's fuel: about one unit per instruction).
const FUEL: u64 = 200_000;

/// A rule's email: each part a template; an empty part takes the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailTemplate {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// An email as rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

const DEFAULT_SUBJECT: &str = "{{ rule.display_name }}: {{ type | short_type }} {{ subject }}";
const DEFAULT_TEXT: &str = "{{ rule.display_name }}\n\n{{ type | short_type }} on {{ subject }} at {{ timestamp }}.\n";
const DEFAULT_HTML: &str = "<p><strong>{{ rule.display_name }}</strong></p>\n<p>{{ type | short_type }} on {{ subject }} at {{ timestamp }}.</p>\n";

/// The last part of a fully qualified type (`crm.pipeline.v1.TaskDue` → `TaskDue`).
fn short_type(value: String) -> String {
    value.rsplit('.').next().unwrap_or_default().to_owned()
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(FUEL));
    // A misspelt field is an error, not an empty string in a customer's email; a field that
    // may be absent (a message not set) is tested with `{% if %}` or given a `default`.
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.add_filter("short_type", short_type);
    env
}

/// The template names: the HTML part's ends in `.html`, which turns on HTML escaping.
const PARTS: [(&str, &str); 3] = [("subject", "subject.txt"), ("text", "text.txt"), ("html", "body.html")];

impl EmailTemplate {
    fn parts(&self) -> [&str; 3] {
        fn or<'a>(part: &'a str, default: &'static str) -> &'a str {
            if part.trim().is_empty() { default } else { part }
        }
        [
            or(&self.subject, DEFAULT_SUBJECT),
            or(&self.text, DEFAULT_TEXT),
            or(&self.html, DEFAULT_HTML),
        ]
    }

    /// Every part that does not compile or is too long: (`subject`, `text` or `html`, reason).
    pub fn problems(&self) -> Vec<(String, String)> {
        let env = environment();
        let mut problems = Vec::new();
        for ((field, name), source) in PARTS.iter().zip(self.parts()) {
            let max = if *field == "subject" { MAX_SUBJECT } else { MAX_BODY };
            if source.chars().count() > max {
                problems.push(((*field).to_owned(), format!("is longer than {max} characters")));
            } else if let Err(e) = env.template_from_named_str(name, source) {
                problems.push(((*field).to_owned(), describe(&e)));
            }
        }
        problems
    }

    /// The email for `context` (the webhook body of an event, with `rule`), or why a part
    /// cannot be rendered.
    pub fn render(&self, context: &serde_json::Value) -> Result<Rendered, RenderError> {
        let env = environment();
        let mut out = [String::new(), String::new(), String::new()];
        for (((field, name), source), out) in PARTS.iter().zip(self.parts()).zip(out.iter_mut()) {
            *out = env
                .render_named_str(name, source, minijinja::Value::from(Serde(context)))
                .map_err(|e| RenderError {
                    part: field,
                    reason: describe(&e),
                })?;
        }
        let [subject, text, html] = out;
        // A header is one line.
        let subject: String = subject
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(MAX_RENDERED_SUBJECT)
            .collect();
        Ok(Rendered { subject, text, html })
    }
}

const DIGEST_SUBJECT: &str = "{{ count }} notification{% if count != 1 %}s{% endif %} held for you";
const DIGEST_TEXT: &str = "{% for e in held %}- {{ e.subject }} ({{ e.time }})\n{% endfor %}";
const DIGEST_HTML: &str =
    "<ul>\n{% for e in held %}<li>{{ e.subject }} <small>{{ e.time }}</small></li>\n{% endfor %}</ul>\n";

/// The digest email carrying `held` (their subjects and times, oldest first).
pub fn digest(held: &[super::HeldEmail]) -> Rendered {
    let context = serde_json::json!({
        "count": held.len(),
        "held": held
            .iter()
            .map(|e| serde_json::json!({
                "subject": e.subject,
                "type": e.event_type,
                "time": e.create_time.format("%Y-%m-%d %H:%M UTC").to_string(),
            }))
            .collect::<Vec<_>>(),
    });
    let template = EmailTemplate {
        subject: DIGEST_SUBJECT.to_owned(),
        text: DIGEST_TEXT.to_owned(),
        html: DIGEST_HTML.to_owned(),
    };
    // Fixed templates over fixed fields: a failure is a defect of this code, shown in the email.
    template.render(&context).unwrap_or_else(|e| Rendered {
        subject: format!("{} notifications held for you", held.len()),
        text: e.to_string(),
        html: String::new(),
    })
}

/// A template error for people: what went wrong and on which line.
fn describe(e: &minijinja::Error) -> String {
    let mut text = e
        .detail()
        .map_or_else(|| e.kind().to_string(), |d| format!("{}: {d}", e.kind()));
    if let Some(line) = e.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

/// Why a part of a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// `subject`, `text` or `html`.
    pub part: &'static str,
    pub reason: String,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.part, self.reason)
    }
}

/// The context a rule's email is rendered with: the event's webhook body and the rule.
pub fn context(webhook_body: &serde_json::Value, rule_name: &str, display_name: &str) -> serde_json::Value {
    let mut context = webhook_body.clone();
    if let Some(object) = context.as_object_mut() {
        object.insert(
            "rule".to_owned(),
            serde_json::json!({ "name": rule_name, "display_name": display_name }),
        );
    }
    context
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task_due() -> serde_json::Value {
        context(
            &serde_json::json!({
                "type": "crm.pipeline.v1.TaskDue",
                "timestamp": "2026-12-06T09:00:00.000000Z",
                "eventId": "e1",
                "subject": "tasks/1",
                "data": { "task": { "title": "Call <Ann>", "assignee": "bob" } },
            }),
            "rules/1",
            "Task due",
        )
    }

    #[test]
    fn the_defaults_name_the_rule_and_the_event() {
        let rendered = EmailTemplate::default().render(&task_due()).expect("renders");
        assert_eq!(rendered.subject, "Task due: TaskDue tasks/1");
        assert!(
            rendered
                .text
                .contains("TaskDue on tasks/1 at 2026-12-06T09:00:00.000000Z")
        );
        assert!(rendered.html.starts_with("<p><strong>Task due</strong></p>"));
    }

    #[test]
    fn html_is_escaped_and_text_is_not() {
        let template = EmailTemplate {
            subject: "Due:\n {{ data.task.title }}".into(),
            text: "{{ data.task.title }}".into(),
            html: "<b>{{ data.task.title }}</b>".into(),
        };
        let rendered = template.render(&task_due()).expect("renders");
        assert_eq!(rendered.subject, "Due: Call <Ann>");
        assert_eq!(rendered.text, "Call <Ann>");
        assert_eq!(rendered.html, "<b>Call &lt;Ann&gt;</b>");
    }

    #[test]
    fn a_digest_lists_what_it_carries_escaped_in_html() {
        let at = |m| {
            chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 12, 6, 9, m, 0)
                .single()
                .expect("time")
        };
        let held = [
            super::super::HeldEmail {
                id: uuid::Uuid::now_v7(),
                subject: "Won: <Initech>".into(),
                event_type: "crm.pipeline.v1.DealWon".into(),
                create_time: at(1),
            },
            super::super::HeldEmail {
                id: uuid::Uuid::now_v7(),
                subject: "Task due: Call Ann".into(),
                event_type: "crm.pipeline.v1.TaskDue".into(),
                create_time: at(2),
            },
        ];
        let rendered = digest(&held);
        assert_eq!(rendered.subject, "2 notifications held for you");
        assert_eq!(
            rendered.text,
            "- Won: <Initech> (2026-12-06 09:01 UTC)\n- Task due: Call Ann (2026-12-06 09:02 UTC)\n"
        );
        assert!(
            rendered.html.contains("<li>Won: &lt;Initech&gt; <small>"),
            "{}",
            rendered.html
        );
        assert_eq!(digest(&held[..1]).subject, "1 notification held for you");
    }

    #[test]
    fn a_template_that_does_not_compile_is_named() {
        let template = EmailTemplate {
            subject: "{{ subject".into(),
            text: String::new(),
            html: "{% if %}".into(),
        };
        let fields: Vec<String> = template.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["subject", "html"]);
        assert!(EmailTemplate::default().problems().is_empty());
    }

    #[test]
    fn a_missing_field_or_endless_loop_fails_at_render_time_with_the_part() {
        let missing = EmailTemplate {
            text: "{{ data.deal.title }}".into(),
            ..Default::default()
        };
        let error = missing.render(&task_due()).expect_err("undefined");
        assert_eq!(error.part, "text", "{error}");
        let endless = EmailTemplate {
            html: "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}".into(),
            ..Default::default()
        };
        let error = endless.render(&task_due()).expect_err("out of fuel");
        assert_eq!(error.part, "html", "{error}");
    }

    /// The data a render makes is paid for by its fuel: a long string repeated, or one
    /// doubled in a loop, fails before it fills the memory (fuel pays for
    /// 64 bytes a unit: the most a render can make is about 12.8 MB).
    #[test]
    fn a_template_making_huge_strings_fails_at_render_time() {
        for html in [
            r#"{% set s = "x" * 100000000 %}{% for i in range(1000) %}{{ s }}{% endfor %}"#,
            r#"{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"#,
            r#"{% for i in range(100000) %}{{ "y" * 1000000 }}{% endfor %}"#,
        ] {
            let huge = EmailTemplate {
                html: html.into(),
                ..Default::default()
            };
            assert!(huge.problems().is_empty(), "{html} compiles");
            let started = std::time::Instant::now();
            let error = huge.render(&task_due()).expect_err("out of fuel");
            assert_eq!(error.part, "html", "{error}");
            assert!(started.elapsed() < std::time::Duration::from_secs(5), "{html}");
        }
    }
}
