//! James 3's composite matchers: `<matcher name="x" match="Or">` with nested `<matcher>`
//! children, declared in a processor (or at the top of `<spoolmanager>`), used by name in a
//! mailet's `match="x"` or in another declaration.
//!
//! This module owns the meaning of the names and the combination of the children's results;
//! `tree.rs` owns everything else about a step. Every declaration is built once, at start-up,
//! whether used or not, so that its mistakes are reported once at its own line: an unknown
//! matcher, a cycle of names, an `And`/`Or`/`Not`/`Xor` without any child, children under a plain matcher, a name declared twice or that is also a matcher's.

use std::collections::BTreeMap;
use std::sync::Arc;

use mailroom_config::{split_matcher, ConfigError, MatcherDecl};
use mailroom_mailet::{Mail, MailAddress, MailetContext, MailetError, Matcher};

use crate::registry::{short_name, Registry};

/// Registers And, Or, Not and Xor for their documentation (`mailroom list-matchers`): used
/// directly in a mailet's `match=`, they are an error that says how to declare them.
pub(crate) fn register(registry: &mut Registry) {
    let docs = [
        ("And", "The recipients that every nested matcher matched (children after one that matched nobody are not asked)."),
        ("Or", "The recipients that at least one nested matcher matched."),
        ("Not", "The mail's recipients that none of its nested matchers matched (with several, James 3's NOR)."),
        ("Xor", "The recipients that an odd number of nested matchers matched."),
    ];
    for (name, summary) in docs {
        registry
            .add_matcher(name, move |_| {
                Err(MailetError::new(format!(
                    "{name} is a composite matcher: declare it in the processor as \
                     <matcher name=\"myName\" match=\"{name}\"><matcher match=\"...\"/>...</matcher> \
                     and write match=\"myName\""
                )))
            })
            .no_condition()
            .about(
                summary,
                match name {
                    "And" => r#"<matcher name="bigLocal" match="And"><matcher match="SizeGreaterThan=1m"/><matcher match="HostIsLocal"/></matcher> <mailet match="bigLocal" class="Null"/>"#,
                    "Or" => r#"<matcher name="spamOrBig" match="Or"><matcher match="SizeGreaterThan=1m"/><matcher match="InSpammerBlacklist=dnsbl.example."/></matcher> <mailet match="spamOrBig" class="ToProcessor">"#,
                    "Not" => r#"<matcher name="remote" match="Not"><matcher match="HostIsLocal"/></matcher> <mailet match="remote" class="RemoteDelivery">"#,
                    _ => r#"<matcher name="oneOf" match="Xor"><matcher match="HasHeader=X-A"/><matcher match="HasHeader=X-B"/></matcher>"#,
                },
            );
    }
}

/// How a composite combines its children's matched recipients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The recipients every child matched.
    And,
    /// The recipients some child matched.
    Or,
    /// The mail's recipients that no child matched (James 3's `Not` takes several: NOR).
    Not,
    /// The recipients an odd number of children matched.
    Xor,
}

impl Op {
    /// The operation a `match=` name stands for.
    pub fn of(name: &str) -> Option<Op> {
        match name {
            "And" => Some(Op::And),
            "Or" => Some(Op::Or),
            "Not" => Some(Op::Not),
            "Xor" => Some(Op::Xor),
            _ => None,
        }
    }
}

/// A composite matcher: an operation over child matchers.
pub struct Composite {
    op: Op,
    children: Vec<Arc<dyn Matcher>>,
}

impl Composite {
    /// `op` over `children` (which the caller has checked: at least one).
    pub fn new(op: Op, children: Vec<Arc<dyn Matcher>>) -> Self {
        Composite { op, children }
    }
}

impl Matcher for Composite {
    fn matches(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<MailAddress>, MailetError> {
        let recipients = mail.recipients();
        // How many children matched each recipient, by position in the mail.
        let mut counts = vec![0usize; recipients.len()];
        for child in &self.children {
            let matched = child.matches(mail, ctx)?;
            let mut any = false;
            for (count, rcpt) in counts.iter_mut().zip(recipients) {
                if matched.contains(rcpt) {
                    *count += 1;
                    any = true;
                }
            }
            // An empty intersection stays empty: the other children are not asked (James 3).
            if self.op == Op::And && !any {
                return Ok(Vec::new());
            }
        }
        let n = self.children.len();
        let keep = |count: usize| match self.op {
            Op::And => count == n,
            Op::Or => count > 0,
            Op::Not => count == 0,
            Op::Xor => count % 2 == 1,
        };
        Ok(recipients
            .iter()
            .zip(counts)
            .filter(|(_, count)| keep(*count))
            .map(|(rcpt, _)| rcpt.clone())
            .collect())
    }
}

/// A shared matcher as a step's own: every use of a declaration shares one instance.
struct Shared(Arc<dyn Matcher>);

impl Matcher for Shared {
    fn matches(
        &self,
        mail: &Mail,
        ctx: &dyn MailetContext,
    ) -> Result<Vec<MailAddress>, MailetError> {
        self.0.matches(mail, ctx)
    }
}

/// Builds a matcher from the registry: a matcher this build does not have yet stands in as
/// one that matches nothing (with a warning), as for a mailet's `match=`.
pub type PlainBuilder<'a> = dyn Fn(&str, Option<&str>) -> Result<Box<dyn Matcher>, String> + 'a;

/// The declarations a processor sees, and what has been built of them.
pub struct Composites<'a> {
    /// Declared names → declaration (the processor's and the `<spoolmanager>`'s).
    decls: BTreeMap<String, &'a MatcherDecl>,
    /// Names built so far: `None` when building failed (reported once already).
    built: BTreeMap<String, Option<Arc<dyn Matcher>>>,
    packages: &'a [String],
}

impl<'a> Composites<'a> {
    /// The declarations `own` on top of those already built in `outer` (the
    /// `<spoolmanager>`'s, for a processor). Names declared twice, or that are a matcher's
    /// name, are reported.
    pub fn new(
        own: &'a [MatcherDecl],
        outer: Option<&Composites<'a>>,
        registry: &Registry,
        packages: &'a [String],
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let mut composites = Composites {
            decls: outer.map(|o| o.decls.clone()).unwrap_or_default(),
            built: outer.map(|o| o.built.clone()).unwrap_or_default(),
            packages,
        };
        let mut named = Vec::new();
        collect_named(own, &mut named);
        for decl in named {
            let Some(name) = decl.name.as_deref() else {
                continue;
            };
            if registry.matcher(name).is_some() {
                errors.push(decl.location.error(format!(
                    "<matcher name=\"{name}\">: {name} is the name of a matcher; choose \
                     another name"
                )));
            } else if name.is_empty() || name.contains(['=', '.']) {
                errors.push(decl.location.error(format!(
                    "<matcher name=\"{name}\">: a name has no '=' or '.' in it"
                )));
            } else if let Some(first) = composites.decls.get(name) {
                errors.push(decl.location.error(format!(
                    "<matcher name=\"{name}\"> is declared twice (first at {})",
                    first.location
                )));
            } else {
                composites.decls.insert(name.to_string(), decl);
            }
        }
        composites
    }

    /// Builds every declaration of `own` (used or not), reporting its mistakes.
    pub fn build_all(
        &mut self,
        own: &[MatcherDecl],
        plain: &PlainBuilder<'_>,
        errors: &mut Vec<ConfigError>,
    ) {
        for decl in own {
            if let Some(name) = decl.name.as_deref() {
                if self.decls.get(name).is_some_and(|d| std::ptr::eq(*d, decl)) {
                    self.named(name, &mut Vec::new(), plain, errors);
                    continue;
                }
            }
            self.decl(decl, &mut Vec::new(), plain, errors);
        }
    }

    /// Whether `name` is a declaration here.
    pub fn contains(&self, name: &str) -> bool {
        self.decls.contains_key(name)
    }

    /// The matcher a mailet's `match="name"` uses; `None` when its declaration failed (the
    /// error is reported at the declaration).
    pub fn use_named(
        &mut self,
        name: &str,
        plain: &PlainBuilder<'_>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Box<dyn Matcher>> {
        self.named(name, &mut Vec::new(), plain, errors)
            .map(|m| Box::new(Shared(m)) as Box<dyn Matcher>)
    }

    /// The declaration called `name`, built once. `stack` holds the names being built, to
    /// tell a cycle.
    fn named(
        &mut self,
        name: &str,
        stack: &mut Vec<String>,
        plain: &PlainBuilder<'_>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Arc<dyn Matcher>> {
        if let Some(built) = self.built.get(name) {
            return built.clone();
        }
        let decl = *self.decls.get(name)?;
        stack.push(name.to_string());
        let built = self.decl(decl, stack, plain, errors);
        stack.pop();
        self.built.insert(name.to_string(), built.clone());
        built
    }

    /// One declaration (named or nested).
    fn decl(
        &mut self,
        decl: &MatcherDecl,
        stack: &mut Vec<String>,
        plain: &PlainBuilder<'_>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Arc<dyn Matcher>> {
        let err = |message: String| decl.location.error(message);
        let (text, condition) = split_matcher(&decl.matcher);
        let op = Op::of(text);
        let Some(op) = op else {
            if !decl.children.is_empty() {
                errors.push(err(format!(
                    "<matcher match=\"{}\"> has nested <matcher> elements, which only And, Or, \
                     Not and Xor take",
                    decl.matcher
                )));
                return None;
            }
            return self.reference(decl, stack, plain, errors);
        };
        if condition.is_some() {
            errors.push(err(format!(
                "{text} takes no condition, only nested <matcher> elements"
            )));
            return None;
        }
        let count = decl.children.len();
        if count == 0 {
            errors.push(err(format!(
                "{text} needs nested <matcher> elements to combine"
            )));
            return None;
        }
        let mut children = Vec::with_capacity(count);
        let mut failed = false;
        for child in &decl.children {
            let built = match child.name.as_deref() {
                // A named nested declaration is built (once) under its name.
                Some(name)
                    if self
                        .decls
                        .get(name)
                        .is_some_and(|d| std::ptr::eq(*d, child)) =>
                {
                    self.named(name, stack, plain, errors)
                }
                _ => self.decl(child, stack, plain, errors),
            };
            match built {
                Some(m) => children.push(m),
                None => failed = true,
            }
        }
        (!failed).then(|| Arc::new(Composite::new(op, children)) as Arc<dyn Matcher>)
    }

    /// A declaration whose `match=` is a plain matcher or the name of another declaration.
    fn reference(
        &mut self,
        decl: &MatcherDecl,
        stack: &mut Vec<String>,
        plain: &PlainBuilder<'_>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Arc<dyn Matcher>> {
        let (text, condition) = split_matcher(&decl.matcher);
        if self.decls.contains_key(text) {
            if condition.is_some() {
                errors.push(decl.location.error(format!(
                    "{text} is a <matcher> declaration: it takes no condition"
                )));
                return None;
            }
            if let Some(at) = stack.iter().position(|n| n == text) {
                let mut cycle = stack[at..].to_vec();
                cycle.push(text.to_string());
                errors.push(decl.location.error(format!(
                    "<matcher> declarations refer to each other in a cycle: {}",
                    cycle.join(" -> ")
                )));
                return None;
            }
            return self.named(text, stack, plain, errors);
        }
        let short = match short_name(text, self.packages) {
            Ok(short) => short,
            Err(e) => {
                errors.push(decl.location.error(e));
                return None;
            }
        };
        match plain(short, condition) {
            Ok(matcher) => Some(Arc::from(matcher)),
            Err(e) => {
                errors.push(decl.location.error(e));
                None
            }
        }
    }
}

/// Every declaration in `decls` and below, in document order.
fn collect_named<'a>(decls: &'a [MatcherDecl], out: &mut Vec<&'a MatcherDecl>) {
    for decl in decls {
        out.push(decl);
        collect_named(&decl.children, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchers::testing::{mail_from, run};
    use crate::ProcessorTree;
    use mailroom_config::Config;

    /// Matches the recipients whose local part is listed.
    struct Users(&'static [&'static str]);

    impl Matcher for Users {
        fn matches(
            &self,
            mail: &Mail,
            _: &dyn MailetContext,
        ) -> Result<Vec<MailAddress>, MailetError> {
            Ok(mail
                .recipients()
                .iter()
                .filter(|r| self.0.contains(&r.local_part()))
                .cloned()
                .collect())
        }
    }

    fn op(op: Op, children: &[&'static [&'static str]]) -> Composite {
        let children = children
            .iter()
            .map(|u| Arc::new(Users(u)) as Arc<dyn Matcher>)
            .collect();
        Composite::new(op, children)
    }

    #[test]
    fn combines_recipients_as_james_3() {
        let mail = mail_from(
            None,
            &["a@x.example", "b@x.example", "c@x.example", "d@x.example"],
            b"\r\nx",
        );
        let (ab, bc, bd): (&[&str], &[&str], &[&str]) = (&["a", "b"], &["b", "c"], &["b", "d"]);
        assert_eq!(run(&op(Op::And, &[ab, bc]), &mail), vec!["b@x.example"]);
        assert!(run(&op(Op::And, &[ab, &["c"]]), &mail).is_empty());
        assert_eq!(
            run(&op(Op::Or, &[ab, bc]), &mail),
            vec!["a@x.example", "b@x.example", "c@x.example"]
        );
        assert_eq!(
            run(&op(Op::Not, &[ab]), &mail),
            vec!["c@x.example", "d@x.example"]
        );
        // Several children: the recipients none matched (James 3's Not).
        assert_eq!(run(&op(Op::Not, &[ab, bc]), &mail), vec!["d@x.example"]);
        // b is matched three times (odd), a, c and d once each.
        assert_eq!(
            run(&op(Op::Xor, &[ab, bc, bd]), &mail),
            vec!["a@x.example", "b@x.example", "c@x.example", "d@x.example"]
        );
        assert_eq!(
            run(&op(Op::Xor, &[ab, bc]), &mail),
            vec!["a@x.example", "c@x.example"]
        );
    }

    fn build(processor: &str, top: &str) -> Result<ProcessorTree, Vec<String>> {
        let xml = format!(
            "<config><spoolmanager>\n{top}\n<processor name=\"root\">\n{processor}\n</processor>\n\
             <processor name=\"error\"><mailet match=\"All\" class=\"Null\"/></processor>\n\
             </spoolmanager></config>"
        );
        let config =
            Config::from_str_with_name(&xml, "t.xml", std::path::Path::new("."), None).unwrap();
        ProcessorTree::build(&config.spool_manager, &Registry::standard(), &[], &[])
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn declarations_nest_and_are_used_by_name() {
        let processor = r#"<matcher name="bigOrNotLocal" match="Or">
<matcher match="SizeGreaterThan=1k"/>
<matcher match="Not"><matcher match="HostIsLocal"/></matcher>
</matcher>
<matcher name="both" match="And"><matcher match="bigOrNotLocal"/><matcher match="global"/></matcher>
<mailet match="both" class="Null"/>
<mailet match="bigOrNotLocal" class="Null"/>"#;
        let tree = build(processor, r#"<matcher name="global" match="All"/>"#)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let root = tree.get("root").unwrap();
        assert_eq!(root.steps.len(), 2);
        let mail = mail_from(None, &["a@local.example", "b@far.example"], b"\r\nsmall");
        let ctx = crate::matchers::testing::TestContext::default();
        let names = |m: &dyn Matcher| -> Vec<String> {
            m.matches(&mail, &ctx)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(names(&*root.steps[0].matcher), vec!["b@far.example"]);
        assert_eq!(names(&*root.steps[1].matcher), vec!["b@far.example"]);
        // James 3's Not takes several children (NOR): a config written for it is accepted.
        let nor = r#"<matcher name="neither" match="Not"><matcher match="HostIsLocal"/><matcher match="SizeGreaterThan=1k"/></matcher>
<mailet match="neither" class="Null"/>"#;
        let tree = build(nor, "").unwrap_or_else(|e| panic!("{e:?}"));
        let step = &tree.get("root").unwrap().steps[0];
        assert_eq!(names(&*step.matcher), vec!["b@far.example"]);
    }

    #[test]
    fn mistakes_are_reported_at_their_lines() {
        let cases = [
            (r#"<matcher name="x" match="Or"><matcher match="NoSuchMatcher"/></matcher>"#, "t.xml:4: unknown matcher \"NoSuchMatcher\""),
            ("<matcher name=\"a\" match=\"Or\">\n<matcher match=\"b\"/></matcher>\n<matcher name=\"b\" match=\"And\">\n<matcher match=\"a\"/></matcher>", "cycle: a -> b -> a"),
            (r#"<matcher name="x" match="Not"/>"#, "t.xml:4: Not needs nested <matcher> elements"),
            (r#"<matcher name="x" match="Or"/>"#, "t.xml:4: Or needs nested <matcher> elements"),
            (r#"<matcher name="HostIsLocal" match="Or"><matcher match="All"/></matcher>"#, "t.xml:4: <matcher name=\"HostIsLocal\">: HostIsLocal is the name of a matcher"),
            (r#"<matcher name="x" match="All"/><matcher name="x" match="All"/>"#, "is declared twice (first at t.xml:4)"),
            (r#"<matcher name="x" match="All"><matcher match="All"/></matcher>"#, "which only And, Or, Not and Xor take"),
            (r#"<matcher name="x" match="All"/><mailet match="x=1" class="Null"/>"#, "x is a <matcher> declaration: it takes no condition"),
            (r#"<mailet match="And" class="Null"/>"#, "And is a composite matcher"),
            (r#"<matcher name="x" match="Or"><matcher match="SizeGreaterThan=lots"/></matcher><mailet match="x" class="Null"/>"#, "its <matcher> declaration has errors"),
        ];
        for (processor, expected) in cases {
            let errors = build(processor, "")
                .err()
                .unwrap_or_else(|| panic!("accepted: {processor}"));
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{processor}: {errors:?}"
            );
        }
        // A cycle is reported once, not once per way into it.
        let errors = build(
            r#"<matcher name="a" match="Not"><matcher match="a"/></matcher><mailet match="a" class="Null"/>"#,
            "",
        )
        .err()
        .unwrap();
        assert_eq!(
            errors.iter().filter(|e| e.contains("cycle")).count(),
            1,
            "{errors:?}"
        );
    }
}
