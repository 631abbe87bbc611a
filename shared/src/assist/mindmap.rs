//! `POST /mindmap`: a topic laid out as a tree, grounded in the tenant's documents.
//!
//! The model is asked for a nested bullet list; [`parse`] reads whatever it answers into a
//! tree, tolerantly: bullets (`-`, `*`, `+`, `•`, numbers), indentation by spaces or tabs,
//! Markdown headings as the upper levels, emphasis, links and code marks removed, prose and
//! code blocks ignored. Levels beyond the asked depth are dropped, and so are children past
//! [`MAX_CHILDREN`] of a node and nodes past [`MAX_NODES`]. An answer without a single list
//! item is a 502 `unusable_model_output`, never a 500 (property-tested: any text gives a valid
//! tree or that error).
//!
//! With the `none` provider the tree is made of what retrieval found: the documents of the
//! passages, and below each the heading paths of its passages (or a passage's first words
//! when it has no heading).

use serde::{Deserialize, Serialize};

use super::{add_usage, offline, required_text, within, Assist, Tally};
use crate::{
    auth::Principal,
    deadline::Deadline,
    error::Error,
    model::{Passage, Source, Usage},
    prompt,
};

/// Levels below the root a caller may ask for.
pub const MAX_DEPTH: u8 = 4;
/// Most children a node keeps.
pub const MAX_CHILDREN: usize = 12;
/// Most nodes a tree keeps, the root included.
pub const MAX_NODES: usize = 200;
/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 500;

/// Body of `POST /mindmap`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MindmapInput {
    pub topic: String,
    /// Levels below the root, 1 to [`MAX_DEPTH`] (default 2).
    #[serde(default = "default_depth", deserialize_with = "crate::http::whole")]
    pub depth: u8,
    #[serde(default = "yes")]
    pub use_documents: bool,
}

fn default_depth() -> u8 {
    2
}

fn yes() -> bool {
    true
}

/// A node of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub title: String,
    pub children: Vec<Node>,
}

impl Node {
    /// Levels below this node (0 for a leaf).
    pub fn depth(&self) -> usize {
        self.children.iter().map(|c| c.depth() + 1).max().unwrap_or(0)
    }

    /// Nodes in the tree, this one included.
    pub fn count(&self) -> usize {
        1 + self.children.iter().map(Node::count).sum::<usize>()
    }
}

/// The answer to `POST /mindmap`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mindmap {
    pub root: Node,
    pub sources: Vec<Source>,
    pub usage: Usage,
    pub model: String,
    /// Set when no model made the tree (what it is instead), or when a guardrail stopped
    /// the model (its message).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// A guardrail intervened: the answer is its message (audited by the caller's handler).
    #[serde(skip)]
    pub intervened: bool,
}

/// The label of a tree made without a model.
pub const HEADINGS_NOTE: &str = "No language model is configured: this tree is made of the documents retrieval found \
for the topic and the headings of their matching passages.";

/// Why a model's answer gave no tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparseable;

impl From<Unparseable> for Error {
    fn from(_: Unparseable) -> Self {
        Error::UnusableModelOutput("the model's answer held no list to make a mind map of; try again".into())
    }
}

impl Assist {
    /// The mind map of `input.topic` for `who`.
    pub async fn mindmap(&self, who: &Principal, input: MindmapInput, deadline: Deadline) -> Result<Mindmap, Error> {
        let topic = required_text(&input.topic, "topic", MAX_TOPIC_CHARS)?;
        if !(1..=MAX_DEPTH).contains(&input.depth) {
            return Err(Error::BadRequest(format!("depth must be 1 to {MAX_DEPTH}")));
        }
        let depth = input.depth as usize;
        let tally = Tally::default();
        let mindmap = within(self, deadline, "the mind map", async {
            let retrieved = async {
                match input.use_documents {
                    true => self.retriever.retrieve(&who.tenant, who.clearance(), topic).await,
                    false => Ok(Default::default()),
                }
            };
            let ((), retrieved) = tokio::try_join!(self.admission.admit(who), retrieved)?;
            if let Some(embedding) = retrieved.embedding {
                tally.add(embedding);
            }
            let passages = retrieved.passages;
            let sources: Vec<Source> = passages.iter().map(|p| p.source.clone()).collect();
            if offline(self) {
                let root = from_headings(topic, &passages, depth);
                let note = Some(HEADINGS_NOTE.to_owned());
                return Ok(Mindmap {
                    root,
                    sources,
                    usage: Usage::default(),
                    model: "none".into(),
                    note,
                    intervened: false,
                });
            }
            let boundary = prompt::boundary();
            let system = "You make mind maps. Answer with a nested Markdown bullet list only: one line per idea, a \
                          few words each, children indented by two spaces under their parent, no prose before or \
                          after it.";
            let message = format!(
                "Make a mind map of this topic: {topic}\nPut the topic itself as the single top-level item, and at \
                 most {depth} levels of ideas below it, at most {MAX_CHILDREN} items under any one item.{}",
                if passages.is_empty() { "" } else { " Ground it in the passages: cover what they say." }
            );
            let budget = super::input_budget(self);
            let prompt = prompt::build(system, None, &passages, &[], &message, budget, &boundary);
            let completion = tally.complete(self, &prompt, &passages).await?;
            let mut usage = Usage::default();
            add_usage(&mut usage, completion.usage);
            if completion.intervened {
                // No tree past a guardrail: the topic alone, and the guardrail's message.
                let root = Node { title: topic.to_owned(), children: Vec::new() };
                let note = Some(completion.text.trim().to_owned());
                return Ok(Mindmap { root, sources, usage, model: completion.model, note, intervened: true });
            }
            let root = parse(&completion.text, topic, depth)?;
            Ok(Mindmap { root, sources, usage, model: completion.model, note: None, intervened: false })
        })
        .await;
        tally.record(self, who).await;
        mindmap
    }
}

/// An item of the model's list: where it sits (headings above bullets, then indentation)
/// and its title.
struct Item {
    level: (usize, usize),
    title: String,
}

/// A tree under construction: titles and children by index, the root at 0.
struct Arena {
    titles: Vec<String>,
    children: Vec<Vec<usize>>,
}

impl Arena {
    fn new(root: String) -> Self {
        Self { titles: vec![root], children: vec![Vec::new()] }
    }

    fn add(&mut self, parent: usize, title: String) -> usize {
        self.titles.push(title);
        self.children.push(Vec::new());
        let id = self.titles.len() - 1;
        self.children[parent].push(id);
        id
    }

    /// The child of `parent` titled `title`, added when there is none.
    fn child(&mut self, parent: usize, title: String) -> usize {
        match self.children[parent].iter().find(|&&c| self.titles[c] == title) {
            Some(&c) => c,
            None => self.add(parent, title),
        }
    }

    /// The tree from `root`, at most `depth` levels below it, [`MAX_CHILDREN`] children a
    /// node and [`MAX_NODES`] nodes in all, taken level by level (the upper levels first).
    fn tree(&self, root: usize, depth: usize) -> Node {
        let mut kept = vec![false; self.titles.len()];
        let mut budget = MAX_NODES - 1;
        let mut level = vec![root];
        for _ in 0..depth {
            let mut next = Vec::new();
            for &id in &level {
                for &c in self.children[id].iter().take(MAX_CHILDREN) {
                    if budget == 0 {
                        break;
                    }
                    budget -= 1;
                    kept[c] = true;
                    next.push(c);
                }
            }
            level = next;
        }
        self.node(root, &kept)
    }

    fn node(&self, id: usize, kept: &[bool]) -> Node {
        let children = self.children[id].iter().filter(|&&c| kept[c]).map(|&c| self.node(c, kept)).collect();
        Node { title: self.titles[id].clone(), children }
    }
}

/// The tree in a model's answer, rooted at its single top-level item or else at `topic`, at
/// most `depth` levels below the root; [`Unparseable`] when it holds no list item, or a
/// single one with nothing below it.
pub fn parse(text: &str, topic: &str, depth: usize) -> Result<Node, Unparseable> {
    let mut arena = Arena::new(clean(topic).unwrap_or_else(|| "Mind map".to_owned()));
    // Each item is the child of the nearest item before it at a higher level.
    let mut open: Vec<((usize, usize), usize)> = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_code = !in_code;
            continue;
        }
        let Some(item) = item(line).filter(|_| !in_code) else { continue };
        while open.last().is_some_and(|(level, _)| *level >= item.level) {
            open.pop();
        }
        let parent = open.last().map_or(0, |(_, id)| *id);
        let id = arena.add(parent, item.title);
        open.push((item.level, id));
    }
    let root = match arena.children[0].as_slice() {
        [] => return Err(Unparseable),
        [only] => *only,
        _ => 0,
    };
    let tree = arena.tree(root, depth);
    if tree.children.is_empty() {
        return Err(Unparseable);
    }
    Ok(tree)
}

/// A list item or a heading, or `None` for any other line.
fn item(line: &str) -> Option<Item> {
    let expanded = line.replace('\t', "    ");
    let indent = expanded.len() - expanded.trim_start().len();
    let rest = expanded.trim_start();
    let hashes = rest.chars().take_while(|&c| c == '#').count();
    if (1..=6).contains(&hashes) && rest[hashes..].starts_with(' ') {
        return clean(&rest[hashes..]).map(|title| Item { level: (hashes, 0), title });
    }
    let marker = ["- ", "* ", "+ ", "• ", "– ", "— "].iter().find_map(|m| rest.strip_prefix(m)).or_else(|| {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let after = &rest[digits..];
        (digits > 0 && digits < 4).then(|| after.strip_prefix(". ").or_else(|| after.strip_prefix(") "))).flatten()
    })?;
    // A bullet marker alone, or a rule (`* * *`, `- - -`), is not an item.
    clean(marker)
        .filter(|t| !t.chars().all(|c| matches!(c, '-' | '*' | '_' | ' ')))
        .map(|title| Item { level: (7, indent), title })
}

/// A title as shown: emphasis, code marks and link targets removed, control characters
/// dropped, white space collapsed, a closing colon removed, at most [`MAX_TITLE_CHARS`];
/// `None` when nothing is left.
fn clean(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        // `[label](target)` is its label.
        if c == '[' {
            if let Some(close) = rest.find("](") {
                if let Some(end) = rest[close..].find(')') {
                    out.push_str(&rest[1..close]);
                    rest = &rest[close + end + 1..];
                    continue;
                }
            }
        }
        if !matches!(c, '*' | '_' | '`') && !c.is_control() {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    let title = out.split_whitespace().collect::<Vec<_>>().join(" ");
    let title = title.trim_end_matches(':').trim_end();
    if title.is_empty() {
        return None;
    }
    if title.chars().count() <= MAX_TITLE_CHARS {
        return Some(title.to_owned());
    }
    let kept: String = title.chars().take(MAX_TITLE_CHARS - 1).collect();
    Some(format!("{}…", kept.trim_end()))
}

/// The `none` provider's tree: the topic; below it the documents of `passages` in the order
/// retrieval ranked them; below each, its passages' heading paths as a tree (a passage
/// without a heading contributes its first words).
pub fn from_headings(topic: &str, passages: &[Passage], depth: usize) -> Node {
    let mut arena = Arena::new(clean(topic).unwrap_or_else(|| "Mind map".to_owned()));
    for passage in passages {
        let Some(title) = clean(&passage.source.title) else { continue };
        let path: Vec<String> = match &passage.heading {
            Some(heading) => heading.split(" > ").filter_map(clean).collect(),
            None => first_words(&passage.source.snippet).into_iter().collect(),
        };
        let mut at = arena.child(0, title);
        for step in path {
            at = arena.child(at, step);
        }
    }
    arena.tree(0, depth)
}

/// The first eight words of `text`, with an ellipsis when there are more.
fn first_words(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let title = words.iter().take(8).copied().collect::<Vec<_>>().join(" ");
    let title = if words.len() > 8 { format!("{title}…") } else { title };
    clean(&title)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn titles(node: &Node) -> Vec<String> {
        node.children.iter().map(|c| c.title.clone()).collect()
    }

    #[test]
    fn a_nested_list_becomes_the_tree() {
        let answer = "Here is your mind map:\n\n\
                      - **Giving feedback**\n  \
                        - Be specific\n    \
                          - Name the behaviour\n    \
                          - Say its effect\n  \
                        - Timing:\n    \
                          - Soon after\n\n\
                      Hope this helps!";
        let root = parse(answer, "feedback", 2).unwrap();
        assert_eq!(root.title, "Giving feedback");
        assert_eq!(titles(&root), vec!["Be specific", "Timing"]);
        assert_eq!(titles(&root.children[0]), vec!["Name the behaviour", "Say its effect"]);
        // One level fewer when asked for one.
        let shallow = parse(answer, "feedback", 1).unwrap();
        assert_eq!(shallow.depth(), 1);
    }

    #[test]
    fn many_top_items_hang_under_the_topic_and_other_markers_are_read_too() {
        let answer = "1. First idea\n\t* a [linked](http://x) point\n2) Second `idea`\n• Third\n```\n- not this\n```";
        let root = parse(answer, "My topic", 3).unwrap();
        assert_eq!(root.title, "My topic");
        assert_eq!(titles(&root), vec!["First idea", "Second idea", "Third"]);
        assert_eq!(titles(&root.children[0]), vec!["a linked point"]);
    }

    #[test]
    fn headings_are_the_upper_levels() {
        let answer = "# Feedback\n## Giving\n- be specific\n- be kind\n## Receiving\n- listen\n";
        let root = parse(answer, "x", 4).unwrap();
        assert_eq!(root.title, "Feedback");
        assert_eq!(titles(&root), vec!["Giving", "Receiving"]);
        assert_eq!(titles(&root.children[0]), vec!["be specific", "be kind"]);
    }

    #[test]
    fn an_answer_without_a_list_is_unusable() {
        for answer in ["", "I cannot help with that.", "- only one item", "***\n---\n- \n"] {
            assert_eq!(parse(answer, "x", 2), Err(Unparseable), "{answer:?}");
        }
        let error: Error = Unparseable.into();
        assert_eq!((error.status().as_u16(), error.code()), (502, "unusable_model_output"));
    }

    #[test]
    fn wide_trees_are_cut() {
        let answer: String = (0..300).map(|i| format!("- item {i}\n  - child {i}\n")).collect();
        let root = parse(&answer, "x", 2).unwrap();
        assert_eq!(root.children.len(), MAX_CHILDREN);
        assert!(root.count() <= MAX_NODES);
    }

    fn passage(title: &str, heading: Option<&str>, snippet: &str) -> Passage {
        let chunk = crate::model::Chunk { heading: heading.map(str::to_owned), text: snippet.to_owned(), span: None };
        let mut p = Passage::of_chunk("d", title, 0, 1.0, &chunk);
        p.source.snippet = snippet.to_owned();
        p
    }

    #[test]
    fn without_a_model_the_tree_is_the_passages_headings() {
        let passages = [
            passage("guide.md", Some("Feedback > Giving"), "Be specific."),
            passage("guide.md", Some("Feedback > Receiving"), "Listen."),
            passage("notes.txt", None, "one two three four five six seven eight nine"),
        ];
        let root = from_headings("feedback", &passages, 3);
        assert_eq!(root.title, "feedback");
        assert_eq!(titles(&root), vec!["guide.md", "notes.txt"]);
        assert_eq!(titles(&root.children[0]), vec!["Feedback"]);
        assert_eq!(titles(&root.children[0].children[0]), vec!["Giving", "Receiving"]);
        assert_eq!(titles(&root.children[1]), vec!["one two three four five six seven eight…"]);
        assert_eq!(from_headings("feedback", &passages, 1).depth(), 1);
        assert!(from_headings("feedback", &[], 2).children.is_empty());
    }

    /// A valid tree: within the asked depth and the limits, every title shown as is.
    fn valid(node: &Node, depth: usize) -> bool {
        let title_ok = |t: &str| {
            !t.is_empty() && t.trim() == t && t.chars().count() <= MAX_TITLE_CHARS && !t.chars().any(char::is_control)
        };
        fn all(node: &Node, ok: &dyn Fn(&str) -> bool) -> bool {
            ok(&node.title) && node.children.len() <= MAX_CHILDREN && node.children.iter().all(|c| all(c, ok))
        }
        node.depth() <= depth && node.count() <= MAX_NODES && all(node, &title_ok)
    }

    fn render(node: &Node, indent: usize, out: &mut String) {
        for child in &node.children {
            out.push_str(&format!("{}- {}\n", "  ".repeat(indent), child.title));
            render(child, indent + 1, out);
        }
    }

    fn tree() -> impl Strategy<Value = Node> {
        let title =
            "[A-Za-z][A-Za-z0-9 ]{0,20}[A-Za-z0-9]".prop_map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "));
        let leaf = title.clone().prop_map(|title| Node { title, children: Vec::new() });
        leaf.prop_recursive(3, 40, 4, move |inner| {
            (title.clone(), prop::collection::vec(inner, 1..4)).prop_map(|(title, children)| Node { title, children })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_answer_gives_a_valid_tree_or_unusable(text in ".{0,2000}", depth in 1usize..=4) {
            if let Ok(root) = parse(&text, "topic", depth) {
                prop_assert!(valid(&root, depth), "{root:?}");
            }
        }

        #[test]
        fn any_list_like_answer_gives_a_valid_tree_or_unusable(
            lines in prop::collection::vec(("[ \t]{0,9}", "(- |\\* |\\+ |• |1\\. |12\\) |#{1,7} |)", ".{0,40}"), 0..80),
            depth in 1usize..=4,
        ) {
            let text: String = lines.iter().map(|(i, m, t)| format!("{i}{m}{t}\n")).collect();
            if let Ok(root) = parse(&text, "topic", depth) {
                prop_assert!(valid(&root, depth), "{root:?}");
            }
        }

        #[test]
        fn a_rendered_tree_reads_back_as_itself(root in tree()) {
            prop_assume!(root.depth() >= 1);
            let mut text = format!("- {}\n", root.title);
            let mut body = String::new();
            render(&root, 1, &mut body);
            text.push_str(&body);
            let depth = root.depth();
            prop_assert_eq!(parse(&text, "topic", depth), Ok(root));
        }
    }
}
