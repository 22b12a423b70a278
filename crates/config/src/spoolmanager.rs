//! `<spoolmanager>`: the worker count and the processor tree, checked for the structural rules
//! of DESIGN §2 (`root` and `error` present, no `ghost`, unique names, `match` and `class` on
//! every mailet), and James 3's composite matchers: `<matcher name="x" match="Or">` with nested
//! `<matcher match="..."/>` children, inside a processor (or at the top of `<spoolmanager>`,
//! for every processor), used by name in a mailet's `match="x"`.
//!
//! Matcher and mailet names, their conditions and parameters, and the processor names used by
//! `onMatchException`/`onMailetException` or `ToProcessor` are *not* checked here: the spool crate
//! owns the registry of matchers and mailets and validates them against these locations.

use crate::error::Location;
use crate::values::Ctx;
use crate::xml::Element;

/// The SpoolManager block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolManager {
    /// Number of spool worker tasks (`<threads>`, default 1, at least 1).
    pub threads: usize,
    /// The processors in document order.
    pub processors: Vec<ProcessorConfig>,
    /// The `<matcher>` declarations directly in `<spoolmanager>`: every processor may use them.
    pub matchers: Vec<MatcherDecl>,
    /// Where the `<spoolmanager>` element is (for errors about the tree as a whole).
    pub location: Location,
}

impl SpoolManager {
    /// The processor called `name`.
    pub fn processor(&self, name: &str) -> Option<&ProcessorConfig> {
        self.processors.iter().find(|p| p.name == name)
    }
}

/// One `<processor name="...">`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorConfig {
    /// The processor (and mail state) name, trimmed.
    pub name: String,
    /// James 2.3's `class` attribute (`org.apache.james.transport.LinearProcessor`), accepted
    /// and kept for messages; every processor is linear.
    pub class: Option<String>,
    /// The matcher/mailet pairs in order.
    pub mailets: Vec<MailetConfig>,
    /// The `<matcher>` declarations of this processor, in order.
    pub matchers: Vec<MatcherDecl>,
    /// Where the `<processor>` element is.
    pub location: Location,
}

/// One `<matcher>` element (James 3): `<matcher name="spamOrBig" match="Or">` with nested
/// `<matcher match="SizeGreaterThan=1m"/>` children. What the names mean (And, Or, Not, Xor,
/// other matchers, other declarations) is the spool crate's to check, at [`MatcherDecl::location`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatcherDecl {
    /// The `name` attribute, trimmed: what a `match=` refers to. Required on a declaration
    /// directly in a processor, optional on a nested one.
    pub name: Option<String>,
    /// The `match` attribute, trimmed: `And`, `Or`, `Not`, `Xor`, any matcher with its
    /// condition, or the name of another declaration.
    pub matcher: String,
    /// The nested `<matcher>` elements, in order.
    pub children: Vec<MatcherDecl>,
    /// Where the `<matcher>` element is.
    pub location: Location,
}

/// One `<mailet match="..." class="...">` with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailetConfig {
    /// The `match` attribute, trimmed: `Name` or `Name=condition`. See [`split_matcher`].
    pub matcher: String,
    /// The `class` attribute, trimmed: a short name or a Java-qualified one.
    pub class: String,
    /// `onMatchException` as written (`error`, `noMatch`, `matchAll` or a processor name);
    /// `None` means the default, `error`.
    pub on_match_exception: Option<String>,
    /// `onMailetException` as written (`error`, `ignore` or a processor name); `None` means the
    /// default, `error`.
    pub on_mailet_exception: Option<String>,
    /// Parameters: child element name → trimmed text, in order of first appearance; a name
    /// written several times has its values joined with `,`.
    pub params: Vec<(String, String)>,
    /// The raw `<mailet>` element, for mailets whose configuration is not a flat list.
    pub element: Element,
    /// Where the `<mailet>` element is.
    pub location: Location,
}

impl MailetConfig {
    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The matcher name (before the first `=`).
    pub fn matcher_name(&self) -> &str {
        split_matcher(&self.matcher).0
    }

    /// The matcher condition (after the first `=`), if any.
    pub fn matcher_condition(&self) -> Option<&str> {
        split_matcher(&self.matcher).1
    }
}

/// Splits `Name=condition` at the first `=`: `("RelayLimit", Some("30"))`; `("All", None)`.
/// The name is trimmed; the condition is kept as written (it may itself contain `=`).
pub fn split_matcher(matcher: &str) -> (&str, Option<&str>) {
    match matcher.split_once('=') {
        Some((name, cond)) => (name.trim(), Some(cond)),
        None => (matcher.trim(), None),
    }
}

/// Parses `<spoolmanager>`.
pub(crate) fn parse(ctx: &mut Ctx, el: &Element) -> SpoolManager {
    let threads = ctx.num_child(el, "threads", 1u32, 1024, 1) as usize;
    let mut processors: Vec<ProcessorConfig> = Vec::new();
    let mut matchers = Vec::new();
    for child in &el.children {
        match child.name.as_str() {
            "threads" => {}
            "matcher" => matchers.extend(matcher_decl(ctx, child, true)),
            "processor" => {
                if let Some(p) = processor(ctx, child) {
                    if let Some(first) = processors.iter().find(|q| q.name == p.name) {
                        ctx.err(
                            child,
                            format!(
                                "processor \"{}\" is defined twice (first at {})",
                                p.name, first.location
                            ),
                        );
                    } else {
                        processors.push(p);
                    }
                }
            }
            other => tracing::info!("{}: <{other}> in <spoolmanager> ignored", child.location()),
        }
    }
    for required in ["root", "error"] {
        if !processors.iter().any(|p| p.name == required) {
            ctx.err(
                el,
                format!("<spoolmanager> has no <processor name=\"{required}\">; the {required} processor is required"),
            );
        }
    }
    SpoolManager {
        threads,
        processors,
        matchers,
        location: el.location(),
    }
}

/// A `<matcher>` element and its nested ones; `top`: directly in a processor or in
/// `<spoolmanager>`, where it must have a name (nothing could refer to it otherwise).
fn matcher_decl(ctx: &mut Ctx, el: &Element, top: bool) -> Option<MatcherDecl> {
    let name = if top {
        Some(ctx.required_attr(el, "name")?.trim().to_string())
    } else {
        el.attr("name").map(|n| n.trim().to_string())
    };
    let matcher = ctx.required_attr(el, "match")?.trim().to_string();
    let mut children = Vec::new();
    for child in &el.children {
        if child.name == "matcher" {
            children.extend(matcher_decl(ctx, child, false));
        } else {
            ctx.err(
                child,
                format!(
                    "<{}> is not allowed in <matcher>; only nested <matcher> elements are",
                    child.name
                ),
            );
        }
    }
    Some(MatcherDecl {
        name,
        matcher,
        children,
        location: el.location(),
    })
}

fn processor(ctx: &mut Ctx, el: &Element) -> Option<ProcessorConfig> {
    let name = ctx.required_attr(el, "name")?;
    if name == "ghost" {
        ctx.err(el, "\"ghost\" cannot be a processor name: it is the state of a mail whose processing is over");
        return None;
    }
    let mut mailets = Vec::new();
    let mut matchers = Vec::new();
    for child in &el.children {
        if child.name == "mailet" {
            mailets.extend(mailet(ctx, child));
        } else if child.name == "matcher" {
            matchers.extend(matcher_decl(ctx, child, true));
        } else {
            ctx.err(
                child,
                format!(
                    "<{}> is not allowed in <processor name=\"{name}\">; only <mailet> and \
                     <matcher> are",
                    child.name
                ),
            );
        }
    }
    Some(ProcessorConfig {
        name,
        class: el.attr("class").map(str::to_string),
        mailets,
        matchers,
        location: el.location(),
    })
}

fn mailet(ctx: &mut Ctx, el: &Element) -> Option<MailetConfig> {
    let matcher = ctx.required_attr(el, "match");
    let class = ctx.required_attr(el, "class");
    let mut params: Vec<(String, String)> = Vec::new();
    for p in &el.children {
        let value = param_value(p);
        match params.iter_mut().find(|(n, _)| *n == p.name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => params.push((p.name.clone(), value)),
        }
    }
    Some(MailetConfig {
        matcher: matcher?,
        class: class?,
        on_match_exception: el.attr("onMatchException").map(str::to_string),
        on_mailet_exception: el.attr("onMailetException").map(str::to_string),
        params,
        element: el.clone(),
        location: el.location(),
    })
}

/// A parameter's value: its text; for a parameter written as a list of elements (James's
/// `<commands><command name="info" class="Info"/></commands>` of `CommandListservManager`,
/// `<commandpackages><commandpackage>..`), one item per child joined with `,`: the child's
/// attributes as `name=value` joined with `;`, or its text when it has none.
fn param_value(p: &Element) -> String {
    if p.children.is_empty() || !p.text.is_empty() {
        return p.text.clone();
    }
    let items: Vec<String> = p
        .children
        .iter()
        .map(|c| {
            if c.attrs.is_empty() {
                c.text.clone()
            } else {
                let attrs: Vec<String> = c.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                attrs.join(";")
            }
        })
        .collect();
    items.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_matchers_are_read_with_their_lines() {
        let xml = "<config><spoolmanager>\n<matcher name=\"g\" match=\"All\"/>\n<processor name=\"root\">\n<matcher name=\"x\" match=\"Or\">\n<matcher match=\"SizeGreaterThan=1m\"/>\n<matcher match=\"Not\"><matcher match=\"HostIsLocal\"/></matcher>\n</matcher>\n<mailet match=\"x\" class=\"Null\"/>\n</processor>\n<processor name=\"error\"/>\n</spoolmanager></config>";
        let config =
            crate::Config::from_str_with_name(xml, "t.xml", std::path::Path::new("."), None)
                .unwrap();
        let sm = &config.spool_manager;
        assert_eq!(sm.matchers.len(), 1);
        assert_eq!(sm.matchers[0].name.as_deref(), Some("g"));
        let root = sm.processor("root").unwrap();
        let x = &root.matchers[0];
        assert_eq!((x.name.as_deref(), x.matcher.as_str()), (Some("x"), "Or"));
        assert_eq!(x.location.line, 4);
        assert_eq!(x.children.len(), 2);
        assert_eq!(x.children[0].matcher, "SizeGreaterThan=1m");
        assert_eq!(x.children[1].children[0].matcher, "HostIsLocal");
        assert_eq!(x.children[1].location.line, 6);
        assert_eq!(root.mailets[0].matcher, "x");

        for bad in [
            "<matcher match=\"Or\"/>",
            "<matcher name=\"x\" match=\"Or\"><p>1</p></matcher>",
            "<matcher name=\"x\"/>",
        ] {
            let xml = format!(
                "<config><spoolmanager><processor name=\"root\">{bad}</processor>\
                 <processor name=\"error\"/></spoolmanager></config>"
            );
            let result =
                crate::Config::from_str_with_name(&xml, "t.xml", std::path::Path::new("."), None);
            assert!(result.is_err(), "{bad}");
        }
    }

    #[test]
    fn matcher_split() {
        assert_eq!(split_matcher("RelayLimit=30"), ("RelayLimit", Some("30")));
        assert_eq!(split_matcher("All"), ("All", None));
        assert_eq!(
            split_matcher("HasMailAttributeWithValue=a, b=c"),
            ("HasMailAttributeWithValue", Some("a, b=c"))
        );
    }

    #[test]
    fn list_parameters_are_flattened() {
        let xml = r#"<mailet match="All" class="X"><listName> t </listName>
            <commandpackages><commandpackage>a.b</commandpackage></commandpackages>
            <commands><command name="info" class="Info"/><command name="owner" class="Owner"/></commands>
            </mailet>"#;
        let el = crate::xml::parse_document(
            xml,
            std::sync::Arc::from(std::path::Path::new("t")),
            std::path::Path::new("."),
        )
        .unwrap();
        let values: Vec<String> = el.children.iter().map(param_value).collect();
        assert_eq!(
            values,
            ["t", "a.b", "name=info;class=Info,name=owner;class=Owner"]
        );
    }
}
