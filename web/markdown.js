// Markdown for answers, sanitised by construction: the text is parsed here and the page is
// built with createElement and text nodes only, so nothing in an answer (a model's reply, a
// quoted document, a user's question) is ever read as HTML. Covers what models write:
// paragraphs (a line break is kept), headings, lists (nested by indentation), quotes, fenced
// code, tables, rules, **strong**, *emphasis*, ~~strike~~, `code`, links (http, https and
// mailto only; any other link shows its text alone) and citation markers `[n]`, which
// `cite(n)` turns into a node (or null, to keep the text as it is).
"use strict";

const Markdown = (() => {
  const LIST_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const FENCE = /^\s*(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)(\s+#+)?\s*$/;
  const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
  const QUOTE = /^\s{0,3}>\s?(.*)$/;
  const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;
  const SAFE_LINK = /^(https?:\/\/|mailto:)/i;
  // In order: code span, link, citation markers, strong, emphasis, strike, bare URL.
  const INLINE = new RegExp(
    [
      "(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)",
      "\\[([^\\]\\n]+)\\]\\(([^()\\s]+)\\)",
      "\\[(\\d{1,3}(?:\\s*,\\s*\\d{1,3})*)\\]",
      "(\\*\\*|__)(?=\\S)([\\s\\S]*?\\S)\\6",
      "(?<![\\w*])(\\*|_)(?=[^\\s*_])([\\s\\S]*?[^\\s*_])\\8(?![\\w*])",
      "~~(?=\\S)([\\s\\S]*?\\S)~~",
      "(https?:\\/\\/[^\\s<>()]*[^\\s<>().,;:!?'\"])",
    ].join("|"),
    "g",
  );

  function el(name, text) {
    const node = document.createElement(name);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  /** A link that opens apart from the page and tells the target nothing of it. */
  function link(href) {
    const a = el("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    return a;
  }

  const indentOf = (line) => line.length - line.trimStart().length;

  function isTable(lines, i) {
    return lines[i].includes("|") && i + 1 < lines.length && lines[i + 1].includes("-") && TABLE_RULE.test(lines[i + 1]);
  }

  function startsBlock(lines, i) {
    const line = lines[i];
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) ||
      LIST_ITEM.test(line) || isTable(lines, i);
  }

  /** The cells of a table row: outer pipes dropped, split on pipes not escaped as `\|`. */
  function cells(line) {
    let row = line.trim();
    if (row.startsWith("|")) row = row.slice(1);
    if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
    const out = [];
    let cell = "";
    for (let k = 0; k < row.length; k++) {
      if (row[k] === "\\" && row[k + 1] === "|") {
        cell += "|";
        k++;
      } else if (row[k] === "|") {
        out.push(cell.trim());
        cell = "";
      } else cell += row[k];
    }
    out.push(cell.trim());
    return out;
  }

  function table(lines, i, cite) {
    const head = cells(lines[i]);
    const aligns = cells(lines[i + 1]).map((c) =>
      c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : c.startsWith(":") ? "left" : "");
    const node = el("table");
    const row = (values, tag) => {
      const tr = el("tr");
      head.forEach((_, k) => {
        const td = el(tag);
        if (aligns[k]) td.className = `align-${aligns[k]}`;
        inline(td, values[k] || "", cite);
        tr.append(td);
      });
      return tr;
    };
    const thead = el("thead");
    thead.append(row(head, "th"));
    const tbody = el("tbody");
    i += 2;
    while (i < lines.length && lines[i].trim() && lines[i].includes("|")) tbody.append(row(cells(lines[i++]), "td"));
    node.append(thead, tbody);
    return [node, i];
  }

  function list(lines, i, cite) {
    const first = lines[i].match(LIST_ITEM);
    const indent = first[1].length;
    const ordered = /\d/.test(first[2]);
    const node = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
    const sameList = (line) => {
      const m = line !== undefined && line.match(LIST_ITEM);
      return m && m[1].length === indent && /\d/.test(m[2]) === ordered ? m : null;
    };
    while (i < lines.length) {
      // Blank lines between two items of this list do not end it.
      let j = i;
      while (j < lines.length && !lines[j].trim()) j++;
      const m = sameList(lines[j]);
      if (!m) break;
      i = j + 1;
      const body = [m[3]];
      const inner = indent + m[2].length + 1;
      while (i < lines.length) {
        const next = lines[i];
        if (!next.trim()) {
          const after = lines[i + 1];
          if (after !== undefined && after.trim() && indentOf(after) > indent) {
            body.push("");
            i++;
            continue;
          }
          break;
        }
        if (indentOf(next) > indent) body.push(next.slice(Math.min(indentOf(next), inner)));
        else if (startsBlock(lines, i)) break;
        else body.push(next.trim());
        i++;
      }
      const li = el("li");
      if (body.length === 1) inline(li, body[0], cite);
      else {
        const content = render(body.join("\n"), cite);
        // A single paragraph stays bare in its item, as a tight list shows it.
        if (content.childNodes.length === 1 && content.firstChild.nodeName === "P") {
          li.append(...content.firstChild.childNodes);
        } else li.append(content);
      }
      node.append(li);
    }
    return [node, i];
  }

  /** Appends the inline Markdown of `text` to `parent`. */
  function inline(parent, text, cite) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      last = m.index + m[0].length;
      if (m[1] !== undefined) parent.append(el("code", m[2]));
      else if (m[3] !== undefined) {
        if (SAFE_LINK.test(m[4])) {
          const a = link(m[4]);
          inline(a, m[3], cite);
          parent.append(a);
        } else inline(parent, m[3], cite);
      } else if (m[5] !== undefined) {
        const numbers = m[5].split(",").map((n) => parseInt(n, 10));
        const nodes = numbers.map((n) => cite(n));
        if (nodes.every(Boolean)) nodes.forEach((node) => parent.append(node));
        else parent.append(m[0]);
      } else if (m[6] !== undefined) {
        const strong = el("strong");
        inline(strong, m[7], cite);
        parent.append(strong);
      } else if (m[8] !== undefined) {
        const em = el("em");
        inline(em, m[9], cite);
        parent.append(em);
      } else if (m[10] !== undefined) {
        const del = el("del");
        inline(del, m[10], cite);
        parent.append(del);
      } else {
        const a = link(m[11]);
        a.textContent = m[11];
        parent.append(a);
      }
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  /** A fragment with the Markdown of `text`; `cite(n)` gives the node for a marker `[n]`. */
  function render(text, cite) {
    const out = document.createDocumentFragment();
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) {
        i++;
        continue;
      }
      const fence = line.match(FENCE);
      if (fence) {
        const body = [];
        i++;
        // An unclosed fence (a reply still streaming) runs to the end.
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        i++;
        const pre = el("pre");
        const code = el("code", body.join("\n"));
        if (fence[2]) code.dataset.language = fence[2];
        pre.append(code);
        out.append(pre);
        continue;
      }
      const heading = line.match(HEADING);
      if (heading) {
        // Answers sit under the page's own headings: `#` is shown as h3.
        const h = el(`h${Math.min(heading[1].length + 2, 6)}`);
        inline(h, heading[2], cite);
        out.append(h);
        i++;
        continue;
      }
      if (RULE.test(line)) {
        out.append(el("hr"));
        i++;
        continue;
      }
      if (isTable(lines, i)) {
        const [node, next] = table(lines, i, cite);
        out.append(node);
        i = next;
        continue;
      }
      if (QUOTE.test(line)) {
        const body = [];
        while (i < lines.length && QUOTE.test(lines[i])) body.push(lines[i++].match(QUOTE)[1]);
        const quote = el("blockquote");
        quote.append(render(body.join("\n"), cite));
        out.append(quote);
        continue;
      }
      if (LIST_ITEM.test(line)) {
        const [node, next] = list(lines, i, cite);
        out.append(node);
        i = next;
        continue;
      }
      const p = el("p");
      inline(p, lines[i++].trim(), cite);
      while (i < lines.length && lines[i].trim() && !startsBlock(lines, i)) {
        p.append(el("br"));
        inline(p, lines[i++].trim(), cite);
      }
      out.append(p);
    }
    return out;
  }

  return { render };
})();
