//! The owned element tree: `config.xml` (plus its entity includes) as plain data where every
//! element knows its file and line.
//!
//! roxmltree does the XML parsing. James configs pull fragments in through external entities
//! (`<!ENTITY fetchmailConfig SYSTEM "james-fetchmail.xml">` in the DOCTYPE, `&fetchmailConfig;`
//! in the body), which roxmltree would inline without usable positions, so this module resolves
//! them itself, keeping every line number right:
//!
//! 1. the external entity declarations are blanked out of the DOCTYPE (newlines kept);
//! 2. each `&name;` reference in element content becomes a placeholder element on the same line
//!    (references inside comments, CDATA and attribute values are left alone);
//! 3. while building the tree a placeholder is replaced by the elements of the included file,
//!    parsed wrapped in a root element added without newlines; those elements carry the included
//!    file's path.
//!
//! Includes nest up to [`MAX_INCLUDE_DEPTH`] levels; a cycle is an error. This module knows
//! nothing of what the elements mean.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{ConfigError, ConfigErrors, Location};

/// How deep entity includes may nest before the configuration is rejected.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// Element name that stands for an entity reference between preprocessing and tree building.
const PLACEHOLDER: &str = "mailroom-include";
/// Root element wrapped around an included fragment so that it parses as a document.
const FRAGMENT_ROOT: &str = "mailroom-fragment";

/// One XML element with trimmed text and attribute values and its source position.
///
/// `Debug` prints the name and position only: raw elements are kept in typed configs (for
/// options not typed there) and hold passwords in attributes and text.
#[derive(Clone, PartialEq, Eq)]
pub struct Element {
    /// Local name of the element (`mailet`, `processor`, ...).
    pub name: String,
    /// Attributes in document order, values trimmed.
    pub attrs: Vec<(String, String)>,
    /// Child elements in document order, entity includes already spliced in.
    pub children: Vec<Element>,
    /// The element's own text (text and CDATA children concatenated), trimmed.
    pub text: String,
    /// The file the element was written in: the main config or an included fragment.
    pub file: Arc<Path>,
    /// 1-based line of the start tag.
    pub line: u32,
}

impl std::fmt::Debug for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl Element {
    /// Where this element is.
    pub fn location(&self) -> Location {
        Location::new(self.file.clone(), self.line)
    }

    /// An error located at this element.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        self.location().error(message)
    }

    /// The trimmed value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child element called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// All child elements called `name`, in document order.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
}

/// Reads and parses `path`; entity includes resolve relative to its directory.
pub fn load_document(path: &Path) -> Result<Element, ConfigErrors> {
    let file: Arc<Path> = Arc::from(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| Location::new(file.clone(), 0).error(format!("cannot read: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_document(&text, file, base)
}

/// Parses a whole document held in `text`. `file` names it in messages; entity includes resolve
/// relative to `base_dir`.
pub fn parse_document(
    text: &str,
    file: Arc<Path>,
    base_dir: &Path,
) -> Result<Element, ConfigErrors> {
    let (prepared, entities) = prepare_document(text, &file, base_dir)?;
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    let doc = roxmltree::Document::parse_with_options(&prepared, opts)
        .map_err(|e| xml_error(&file, &e))?;
    let mut builder = Builder {
        entities,
        stack: vec![file.to_path_buf()],
        errors: Vec::new(),
    };
    let root = builder.element(&doc, doc.root_element(), &file);
    if builder.errors.is_empty() {
        Ok(root)
    } else {
        Err(ConfigErrors(builder.errors))
    }
}

fn xml_error(file: &Arc<Path>, e: &roxmltree::Error) -> ConfigError {
    Location::new(file.clone(), e.pos().row).error(format!("XML syntax error: {e}"))
}

/// Turns roxmltree nodes into [`Element`]s, splicing includes in.
struct Builder {
    /// External entity name → file it includes.
    entities: HashMap<String, PathBuf>,
    /// Files being included, outermost first (cycle detection).
    stack: Vec<PathBuf>,
    errors: Vec<ConfigError>,
}

impl Builder {
    fn element(
        &mut self,
        doc: &roxmltree::Document,
        node: roxmltree::Node,
        file: &Arc<Path>,
    ) -> Element {
        let line = doc.text_pos_at(node.range().start).row;
        let mut el = Element {
            name: node.tag_name().name().to_string(),
            attrs: node
                .attributes()
                .map(|a| (a.name().to_string(), a.value().trim().to_string()))
                .collect(),
            children: Vec::new(),
            text: String::new(),
            file: file.clone(),
            line,
        };
        let mut text = String::new();
        for child in node.children() {
            if child.is_element() {
                if child.tag_name().name() == PLACEHOLDER {
                    let name = child.attribute("entity").unwrap_or_default().to_string();
                    let at = Location::new(file.clone(), doc.text_pos_at(child.range().start).row);
                    el.children.extend(self.include(&name, &at));
                } else {
                    el.children.push(self.element(doc, child, file));
                }
            } else if child.is_text() {
                text.push_str(child.text().unwrap_or_default());
            }
        }
        el.text = text.trim().to_string();
        el
    }

    /// The elements of the file entity `name` refers to, or none after recording an error.
    fn include(&mut self, name: &str, at: &Location) -> Vec<Element> {
        let Some(path) = self.entities.get(name).cloned() else {
            self.errors
                .push(at.error(format!("unknown entity &{name};")));
            return Vec::new();
        };
        if self.stack.len() > MAX_INCLUDE_DEPTH {
            self.errors.push(at.error(format!(
                "entity includes nested deeper than {MAX_INCLUDE_DEPTH} levels at &{name};"
            )));
            return Vec::new();
        }
        if self.stack.iter().any(|p| same_file(p, &path)) {
            let chain: Vec<String> = self
                .stack
                .iter()
                .chain(std::iter::once(&path))
                .map(|p| p.display().to_string())
                .collect();
            self.errors
                .push(at.error(format!("entity include cycle: {}", chain.join(" -> "))));
            return Vec::new();
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.errors.push(at.error(format!(
                    "cannot read {} (included by &{name};): {e}",
                    path.display()
                )));
                return Vec::new();
            }
        };
        let file: Arc<Path> = Arc::from(path.as_path());
        let body = mark_references(&blank_text_declaration(&text), &self.entities);
        let wrapped = format!("<{FRAGMENT_ROOT}>{body}</{FRAGMENT_ROOT}>");
        let doc = match roxmltree::Document::parse(&wrapped) {
            Ok(d) => d,
            Err(e) => {
                self.errors.push(xml_error(&file, &e));
                return Vec::new();
            }
        };
        self.stack.push(path);
        let root = self.element(&doc, doc.root_element(), &file);
        self.stack.pop();
        root.children
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Appends `text` with every character except newlines replaced by a space.
fn blank(out: &mut String, text: &str) {
    out.extend(text.chars().map(|c| if c == '\n' { '\n' } else { ' ' }));
}

/// Blanks a leading BOM and `<?xml ...?>` text declaration of an included fragment.
fn blank_text_declaration(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.starts_with("<?xml") {
        if let Some(end) = text.find("?>") {
            let mut out = String::with_capacity(text.len());
            blank(&mut out, &text[..end + 2]);
            out.push_str(&text[end + 2..]);
            return out;
        }
    }
    text.to_string()
}

/// Blanks the external entity declarations of the DOCTYPE, collects them (resolved against
/// `base_dir`) and marks their references in the body.
fn prepare_document(
    text: &str,
    file: &Arc<Path>,
    base_dir: &Path,
) -> Result<(String, HashMap<String, PathBuf>), ConfigErrors> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entities = HashMap::new();
    let mut blanks: Vec<(usize, usize)> = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    // The prolog: whitespace, PIs, comments, then perhaps the DOCTYPE.
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let rest = &text[i..];
        if rest.starts_with("<?") {
            i += rest.find("?>").map_or(rest.len(), |e| e + 2);
        } else if rest.starts_with("<!--") {
            i += rest.find("-->").map_or(rest.len(), |e| e + 3);
        } else if rest.starts_with("<!DOCTYPE") {
            i = scan_doctype(text, i, file, base_dir, &mut entities, &mut blanks)?;
        } else {
            break;
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (s, e) in blanks {
        out.push_str(&text[last..s]);
        blank(&mut out, &text[s..e]);
        last = e;
    }
    out.push_str(&text[last..i]);
    out.push_str(&mark_references(&text[i..], &entities));
    Ok((out, entities))
}

/// Scans a DOCTYPE starting at `start`; returns the index after it.
fn scan_doctype(
    text: &str,
    start: usize,
    file: &Arc<Path>,
    base_dir: &Path,
    entities: &mut HashMap<String, PathBuf>,
    blanks: &mut Vec<(usize, usize)>,
) -> Result<usize, ConfigErrors> {
    let b = text.as_bytes();
    let line_at = |pos: usize| 1 + text[..pos].bytes().filter(|&c| c == b'\n').count() as u32;
    let mut i = start + "<!DOCTYPE".len();
    let mut quote = None;
    // Up to the internal subset or the end of the DOCTYPE.
    while i < b.len() {
        match (quote, b[i]) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b[i]),
            (None, b'>') => return Ok(i + 1),
            (None, b'[') => break,
            _ => {}
        }
        i += 1;
    }
    // Unterminated: the DOCTYPE runs to the end (roxmltree reports it).
    if i >= b.len() {
        return Ok(b.len());
    }
    i += 1;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map_or(rest.len(), |e| e + 3);
        } else if rest.starts_with("<!ENTITY") {
            let end = markup_end(text, i);
            if let Some((name, system)) = external_entity(&text[i..end]) {
                let path = resolve_system_id(&system, base_dir);
                if entities.insert(name.clone(), path).is_some() {
                    let at = Location::new(file.clone(), line_at(i));
                    return Err(at.error(format!("entity {name} declared twice")).into());
                }
                blanks.push((i, end));
            }
            i = end;
        } else if rest.starts_with('<') {
            i = markup_end(text, i);
        } else if rest.starts_with(']') {
            // `]` then optional whitespace then `>`.
            let close = rest.find('>').map_or(rest.len(), |e| e + 1);
            return Ok(i + close);
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    Ok(i)
}

/// The index after the `>` closing the markup declaration starting at `start` (quotes honoured).
fn markup_end(text: &str, start: usize) -> usize {
    let b = text.as_bytes();
    let mut quote = None;
    let mut i = start + 1;
    while i < b.len() {
        match (quote, b[i]) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b[i]),
            (None, b'>') => return i + 1,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// `(name, system id)` when `decl` is `<!ENTITY name SYSTEM "x">` or `<!ENTITY name PUBLIC "p"
/// "x">`; `None` for internal, parameter or unparsed (NDATA) entities, which roxmltree handles
/// or rejects itself.
fn external_entity(decl: &str) -> Option<(String, String)> {
    let body = decl.strip_prefix("<!ENTITY")?.strip_suffix('>')?;
    let mut rest = body.trim_start();
    if rest.starts_with('%') {
        return None;
    }
    let name_end = rest.find(|c: char| c.is_whitespace())?;
    let name = rest[..name_end].to_string();
    rest = rest[name_end..].trim_start();
    let quoted = |s: &str| -> Option<(String, usize)> {
        let q = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let end = s[1..].find(q)? + 1;
        Some((s[1..end].to_string(), end + 1))
    };
    if let Some(r) = rest.strip_prefix("SYSTEM") {
        rest = r.trim_start();
    } else if let Some(r) = rest.strip_prefix("PUBLIC") {
        let (_, used) = quoted(r.trim_start())?;
        rest = r.trim_start()[used..].trim_start();
    } else {
        return None;
    }
    let (system, used) = quoted(rest)?;
    if rest[used..].contains("NDATA") {
        return None;
    }
    Some((name, system))
}

/// A system identifier as a path: `file:` URLs are unwrapped, relative paths join `base_dir`.
fn resolve_system_id(system: &str, base_dir: &Path) -> PathBuf {
    let s = system
        .strip_prefix("file://")
        .or_else(|| system.strip_prefix("file:"))
        .unwrap_or(system);
    let p = Path::new(s);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

/// Replaces `&name;` in element content by a placeholder element when `name` is an external
/// entity. Comments, CDATA sections, PIs and tags (so attribute values) are copied unchanged.
fn mark_references(body: &str, entities: &HashMap<String, PathBuf>) -> String {
    if entities.is_empty() {
        return body.to_string();
    }
    let mut out = String::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let rest = &body[i..];
        let skip_to = |open: &str, close: &str| -> Option<usize> {
            rest.starts_with(open)
                .then(|| rest.find(close).map_or(rest.len(), |e| e + close.len()))
        };
        let copied = skip_to("<!--", "-->")
            .or_else(|| skip_to("<![CDATA[", "]]>"))
            .or_else(|| skip_to("<?", "?>"))
            .or_else(|| rest.starts_with('<').then(|| markup_end(rest, 0)));
        if let Some(n) = copied {
            out.push_str(&rest[..n]);
            i += n;
            continue;
        }
        if rest.starts_with('&') {
            if let Some(semi) = rest.find(';') {
                let name = &rest[1..semi];
                if entities.contains_key(name) {
                    out.push_str(&format!("<{PLACEHOLDER} entity=\"{name}\"/>"));
                    i += semi + 1;
                    continue;
                }
            }
        }
        let c = rest.chars().next().expect("non-empty");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Element, ConfigErrors> {
        parse_document(text, Arc::from(Path::new("t.xml")), Path::new("."))
    }

    /// Found by the `config_xml` fuzz target: a DOCTYPE without `[` or `>` made the
    /// pre-processor index past the end of the text.
    #[test]
    fn an_unterminated_doctype_is_an_error_not_a_panic() {
        for text in [
            "<!DOCTYPE config",
            "<?xml version=\"1.0\"?>\n<!DOCTYPE c \"x",
            "<!DOCTYPE",
        ] {
            let errors = parse(text).unwrap_err().to_string();
            assert!(errors.contains("t.xml:"), "{errors}");
        }
    }

    #[test]
    fn lines_text_and_attributes_are_trimmed() {
        let root = parse("<config>\n  <a x=\" y \">  hello \n</a>\n<b/></config>").unwrap();
        assert_eq!(root.line, 1);
        let a = root.child("a").unwrap();
        assert_eq!(
            (a.line, a.text.as_str(), a.attr("x")),
            (2, "hello", Some("y"))
        );
        assert_eq!(root.child("b").unwrap().line, 4);
    }

    #[test]
    fn syntax_error_names_the_line() {
        let e = parse("<config>\n<a>\n</b>\n</config>").unwrap_err();
        assert_eq!(e.0[0].line, 3, "{e}");
        assert!(
            e.to_string().starts_with("t.xml:3: XML syntax error"),
            "{e}"
        );
    }

    #[test]
    fn external_entity_parsing() {
        assert_eq!(
            external_entity("<!ENTITY a SYSTEM \"x.xml\">"),
            Some(("a".into(), "x.xml".into()))
        );
        assert_eq!(
            external_entity("<!ENTITY a PUBLIC 'p' 'x.xml'>"),
            Some(("a".into(), "x.xml".into()))
        );
        assert_eq!(external_entity("<!ENTITY a \"text\">"), None);
        assert_eq!(external_entity("<!ENTITY % a SYSTEM \"x\">"), None);
    }

    #[test]
    fn internal_entities_still_work() {
        let root =
            parse("<!DOCTYPE config [\n<!ENTITY who \"world\">\n]>\n<config><a>&who;</a></config>")
                .unwrap();
        assert_eq!(root.child("a").unwrap().text, "world");
    }

    #[test]
    fn missing_include_is_reported_at_reference() {
        let e = parse("<!DOCTYPE config [\n<!ENTITY f SYSTEM \"/nonexistent/f.xml\">\n]>\n<config>\n&f;\n</config>")
            .unwrap_err();
        assert_eq!(e.0[0].line, 5, "{e}");
    }

    #[test]
    fn include_cycle_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.xml"), "<x/>\n&b;").unwrap();
        std::fs::write(dir.path().join("b.xml"), "<y/>\n&a;").unwrap();
        let text = "<!DOCTYPE config [\n<!ENTITY a SYSTEM \"a.xml\">\n<!ENTITY b SYSTEM \"b.xml\">\n]>\n<config>&a;</config>";
        let e = parse_document(text, Arc::from(Path::new("c.xml")), dir.path()).unwrap_err();
        assert!(e.to_string().contains("cycle"), "{e}");
        assert!(e.0[0].file.ends_with("b.xml") && e.0[0].line == 2, "{e}");
    }

    #[test]
    fn references_in_comments_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.xml"), "<x/>").unwrap();
        let text = "<!DOCTYPE config [<!ENTITY a SYSTEM \"a.xml\">]><config><!-- &a; --><y v=\"1\"/>&a;</config>";
        let root = parse_document(text, Arc::from(Path::new("c.xml")), dir.path()).unwrap();
        let names: Vec<&str> = root.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["y", "x"]);
    }
}
