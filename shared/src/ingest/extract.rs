//! Text out of documents: plain text and markdown as they are, HTML to text, PDF through
//! the `pdf-extract` crate. Failures carry reasons written for the person who uploaded the
//! file; nothing here panics on bad input (the PDF parser is additionally fenced with
//! `catch_unwind`, since it is a large third-party parser). Ingest runs this in a child
//! process with memory and time limits ([`super::sandbox`]), which is what bounds a file
//! built to exhaust them.

use crate::model::Kind;

/// Why a document cannot be read, in words for the person who uploaded it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("the PDF is encrypted or password-protected; upload an unprotected copy")]
    EncryptedPdf,
    #[error("the PDF is damaged or not a PDF file")]
    CorruptPdf,
    #[error("no text found in the document: it is empty, or holds only spaces or empty fields")]
    NoText,
    #[error("no text found in the PDF (a scanned PDF needs text recognition first)")]
    NoTextInPdf,
    #[error("the file is not UTF-8 or UTF-16 text (it may be a binary file)")]
    NotUtf8,
    /// Past the extraction's time budget (see [`super::sandbox`]).
    #[error("reading the document took too long (over {seconds} s); split it into smaller files")]
    TookTooLong { seconds: u64 },
    /// Past the extraction's memory limit: typically a PDF whose streams decompress to far
    /// more than the file's size.
    #[error(
        "reading the document needed more than {mib} MiB of memory (a PDF whose contents decompress to \
         far more than its size?); upload a smaller or simpler file"
    )]
    TooMuchMemory { mib: u64 },
    #[error("the document holds more than {mib} MiB of text; split it into smaller files")]
    TooMuchText { mib: u64 },
    #[error("the CSV file could not be read (a quoted field left open?)")]
    MalformedCsv,
    #[error("the Word document is damaged, encrypted or not a .docx file")]
    CorruptDocx,
    /// The parser stopped on the file in a way it could not report (a crash).
    #[error("the document could not be read (the parser stopped on it); the file may be damaged")]
    Crashed,
}

/// The document's text; markdown keeps its markup (the chunker reads its headings).
pub fn extract(kind: Kind, bytes: &[u8]) -> Result<String, ExtractError> {
    let text = match kind {
        Kind::Text | Kind::Markdown => utf8(bytes)?,
        Kind::Html => html_to_text(&utf8(bytes)?),
        Kind::Pdf => pdf_text(bytes)?,
        Kind::Csv => csv_text(&utf8(bytes)?)?,
        Kind::Docx => docx_text(bytes)?,
    };
    if text.trim().is_empty() {
        return Err(if kind == Kind::Pdf { ExtractError::NoTextInPdf } else { ExtractError::NoText });
    }
    Ok(text)
}

/// A CSV file as text: each row a paragraph of `column: value` pairs (named by the header
/// row; empty values left out), so a row is found by its values and cited with its columns.
/// Rows may have more or fewer fields than the header (the extra ones are unnamed).
fn csv_text(text: &str) -> Result<String, ExtractError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let header: Vec<String> =
        reader.headers().map_err(|_| ExtractError::MalformedCsv)?.iter().map(|h| h.trim().to_owned()).collect();
    let mut out = String::new();
    for record in reader.records() {
        let record = record.map_err(|_| ExtractError::MalformedCsv)?;
        let fields: Vec<String> = record
            .iter()
            .enumerate()
            .map(|(i, value)| (header.get(i).filter(|h| !h.is_empty()), value.trim()))
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| match name {
                Some(name) => format!("{name}: {value}"),
                None => value.to_owned(),
            })
            .collect();
        if fields.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(&fields.join("; "));
    }
    Ok(out)
}

/// Most bytes of `word/document.xml` read from a .docx (the extraction child's memory
/// limit bounds the rest): far more than any document's text needs.
const MAX_DOCX_XML_BYTES: u64 = 256 << 20;

/// A Word document's text: the body's paragraphs (`w:p`), each a paragraph of the text, with
/// its runs' text (`w:t`), tabs and line breaks; tables give their cells' paragraphs. Read
/// from `word/document.xml` of the OOXML package (a zip).
fn docx_text(bytes: &[u8]) -> Result<String, ExtractError> {
    use quick_xml::events::Event;
    use std::io::Read;
    let mut package = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|_| ExtractError::CorruptDocx)?;
    let mut xml = String::new();
    package
        .by_name("word/document.xml")
        .map_err(|_| ExtractError::CorruptDocx)?
        .take(MAX_DOCX_XML_BYTES)
        .read_to_string(&mut xml)
        .map_err(|_| ExtractError::CorruptDocx)?;
    let mut reader = quick_xml::Reader::from_str(&xml);
    let (mut out, mut paragraph, mut in_text) = (String::new(), String::new(), false);
    loop {
        match reader.read_event().map_err(|_| ExtractError::CorruptDocx)? {
            Event::Start(e) if e.local_name().as_ref() == "t" => in_text = true,
            Event::End(e) if e.local_name().as_ref() == "t" => in_text = false,
            Event::Text(t) if in_text => paragraph.push_str(&t.xml10_content()),
            Event::CData(t) if in_text => paragraph.push_str(&t.into_inner()),
            Event::GeneralRef(r) if in_text => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    // Character references may name control characters XML text cannot hold.
                    if !c.is_control() || matches!(c, '\t' | '\n') {
                        paragraph.push(c);
                    }
                } else if let Some(text) = quick_xml::escape::resolve_predefined_entity(&r.xml10_content()) {
                    paragraph.push_str(text);
                }
            }
            Event::Empty(e) => match e.local_name().as_ref() {
                "tab" => paragraph.push('\t'),
                "br" | "cr" => paragraph.push('\n'),
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == "p" => {
                let text = paragraph.trim();
                if !text.is_empty() {
                    if !out.is_empty() {
                        out.push_str("\n\n");
                    }
                    out.push_str(text);
                }
                paragraph.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    // A NUL byte in the XML text itself (invalid XML, kept by the parser) means nothing either.
    if out.contains('\0') {
        out.retain(|c| c != '\0');
    }
    Ok(out)
}

/// Text files as editors save them: UTF-8 (with or without a byte-order mark) or UTF-16 with
/// its byte-order mark. NUL bytes mean a binary file (or UTF-16 without a mark), not text.
fn utf8(bytes: &[u8]) -> Result<String, ExtractError> {
    let text = if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        utf16(rest, u16::from_le_bytes)?
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        utf16(rest, u16::from_be_bytes)?
    } else {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        String::from_utf8(bytes.to_vec()).map_err(|_| ExtractError::NotUtf8)?
    };
    if text.contains('\0') {
        return Err(ExtractError::NotUtf8);
    }
    Ok(text)
}

fn utf16(bytes: &[u8], unit: fn([u8; 2]) -> u16) -> Result<String, ExtractError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(ExtractError::NotUtf8);
    }
    let units = bytes.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    char::decode_utf16(units).collect::<Result<String, _>>().map_err(|_| ExtractError::NotUtf8)
}

fn pdf_text(bytes: &[u8]) -> Result<String, ExtractError> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(ExtractError::CorruptPdf);
    }
    let owned = bytes.to_vec();
    // What `pdf_extract::extract_text_from_mem` does, with a check of the page tree between
    // loading and reading: pdf-extract looks up a page's inherited attributes through its
    // `Parent` links without noticing a cycle, and never returns.
    let result = std::panic::catch_unwind(move || {
        let mut doc = pdf_extract::Document::load_mem(&owned)?;
        if doc.is_encrypted() {
            doc.decrypt("")?;
        }
        if has_cyclic_parents(&doc) {
            return Ok(None);
        }
        let text = SharedText::default();
        let mut output = Paged { inner: pdf_extract::PlainTextOutput::new(text.clone()), text: text.clone(), pages: 0 };
        pdf_extract::output_doc(&doc, &mut output)?;
        drop(output);
        Ok::<_, pdf_extract::OutputError>(Some(text.0.take()))
    });
    match result {
        // Text runs from some PDF fonts carry NULs; they are never meant as text.
        Ok(Ok(Some(text))) => Ok(text.replace('\0', "")),
        Ok(Err(pdf_extract::OutputError::PdfError(
            pdf_extract::Error::Decryption(_)
            | pdf_extract::Error::InvalidPassword
            | pdf_extract::Error::AlreadyEncrypted,
        ))) => Err(ExtractError::EncryptedPdf),
        Ok(Ok(None) | Err(_)) | Err(_) => Err(ExtractError::CorruptPdf),
    }
}

/// The text pdf-extract writes, shared with [`Paged`], which marks where pages begin.
#[derive(Clone, Default)]
struct SharedText(std::rc::Rc<std::cell::RefCell<String>>);

impl std::fmt::Write for SharedText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.borrow_mut().push_str(s);
        Ok(())
    }
}

impl pdf_extract::ConvertToFmt for SharedText {
    type Writer = SharedText;
    fn convert(self) -> Self::Writer {
        self
    }
}

/// pdf-extract's plain text, with a form feed where each page after the first begins (as
/// `pdftotext` separates pages), so chunks can say which pages they are on.
struct Paged {
    inner: pdf_extract::PlainTextOutput<SharedText>,
    text: SharedText,
    pages: u32,
}

impl pdf_extract::OutputDev for Paged {
    fn begin_page(
        &mut self,
        page_num: u32,
        media_box: &pdf_extract::MediaBox,
        art_box: Option<(f64, f64, f64, f64)>,
    ) -> Result<(), pdf_extract::OutputError> {
        if self.pages > 0 {
            self.text.0.borrow_mut().push('\x0c');
        }
        self.pages += 1;
        self.inner.begin_page(page_num, media_box, art_box)
    }
    fn end_page(&mut self) -> Result<(), pdf_extract::OutputError> {
        self.inner.end_page()
    }
    fn output_character(
        &mut self,
        trm: &pdf_extract::Transform,
        width: f64,
        spacing: f64,
        font_size: f64,
        char: &str,
    ) -> Result<(), pdf_extract::OutputError> {
        self.inner.output_character(trm, width, spacing, font_size, char)
    }
    fn begin_word(&mut self) -> Result<(), pdf_extract::OutputError> {
        self.inner.begin_word()
    }
    fn end_word(&mut self) -> Result<(), pdf_extract::OutputError> {
        self.inner.end_word()
    }
    fn end_line(&mut self) -> Result<(), pdf_extract::OutputError> {
        self.inner.end_line()
    }
}

/// Whether following `Parent` links up from some page comes back to a dictionary already
/// passed (a damaged page tree).
fn has_cyclic_parents(doc: &pdf_extract::Document) -> bool {
    doc.get_pages().into_values().any(|page| {
        let mut seen = std::collections::HashSet::from([page]);
        let mut at = page;
        loop {
            let parent =
                doc.get_dictionary(at).ok().and_then(|d| d.get(b"Parent").ok()).and_then(|p| p.as_reference().ok());
            match parent {
                None => return false,
                Some(id) if !seen.insert(id) => return true,
                Some(id) => at = id,
            }
        }
    })
}

/// HTML to readable text: drops `script`, `style`, `head` and comments, turns block
/// elements into line breaks, decodes the common entities and numeric references.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        push_text(&mut out, &rest[..lt]);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            rest = "";
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if !tag.starts_with('/') && matches!(name.as_str(), "script" | "style" | "head" | "noscript" | "template") {
            let close = format!("</{name}");
            rest = find_ci(rest, &close).map_or("", |at| {
                let after = &rest[at..];
                after.find('>').map_or("", |gt| &after[gt + 1..])
            });
            continue;
        }
        if matches!(
            name.as_str(),
            "p" | "div"
                | "br"
                | "li"
                | "ul"
                | "ol"
                | "h1"
                | "h2"
                | "h3"
                | "h4"
                | "h5"
                | "h6"
                | "tr"
                | "table"
                | "section"
                | "article"
                | "header"
                | "footer"
                | "blockquote"
                | "pre"
                | "hr"
                | "title"
        ) {
            out.push('\n');
        } else if matches!(name.as_str(), "td" | "th") {
            out.push(' ');
        }
    }
    push_text(&mut out, rest);
    // Collapse runs of blank lines and spaces.
    let lines: Vec<String> = out.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    let mut text = String::new();
    let mut blank = false;
    for line in lines {
        if line.is_empty() {
            blank = !text.is_empty();
            continue;
        }
        if blank {
            text.push_str("\n\n");
        } else if !text.is_empty() {
            text.push('\n');
        }
        blank = false;
        text.push_str(&line);
    }
    text
}

/// Where `needle` first occurs in `haystack`, ASCII case ignored, without copying either: a
/// scan from the start of `haystack` that never looks back, so a document of many tags
/// costs time in proportion to its length (lowercasing the rest of the file for each tag
/// made a file of `<style></style>` repeated quadratic).
fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    let (hay, needle) = (haystack.as_bytes(), needle.as_bytes());
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(offset) = hay[from..].iter().position(|b| b.eq_ignore_ascii_case(&first)) {
        let at = from + offset;
        if hay.len() - at < needle.len() {
            return None;
        }
        if hay[at..at + needle.len()].eq_ignore_ascii_case(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn push_text(out: &mut String, text: &str) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // An entity ends within 10 bytes: look no further (a search of the whole rest for
        // each `&` made a file of `&` repeated quadratic).
        let end = rest.bytes().take(11).position(|b| b == b';');
        let decoded = end.and_then(|e| decode_entity(&rest[1..e]));
        match (end, decoded) {
            (Some(e), Some(c)) => {
                out.push(c);
                rest = &rest[e + 1..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

fn decode_entity(entity: &str) -> Option<char> {
    match entity {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" | "#39" => Some('\''),
        "nbsp" => Some(' '),
        "mdash" => Some('—'),
        "ndash" => Some('–'),
        "hellip" => Some('…'),
        _ => {
            let number = entity.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code).filter(|c| !c.is_control() || c.is_whitespace())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_to_text_keeps_words_and_structure() {
        let html = "<html><head><title>x</title><style>p{}</style></head><body><h1>Giving&nbsp;feedback</h1>\
                    <!-- note --><p>Be <b>specific</b> &amp; kind.</p><script>alert(1)</script><ul><li>One</li><li>Two &#8212; &#x41;</li></ul></body></html>";
        assert_eq!(html_to_text(html), "Giving feedback\n\nBe specific & kind.\n\nOne\n\nTwo — A");
    }

    #[test]
    fn html_survives_broken_markup() {
        assert_eq!(html_to_text("a < b and <unclosed"), "a");
        assert_eq!(html_to_text("x &bogus; &#xZZ; &"), "x &bogus; &#xZZ; &");
        assert_eq!(html_to_text("<script>never closed"), "");
    }

    #[test]
    fn hostile_html_of_15_mb_is_read_in_one_pass() {
        // Each was quadratic before: every `<style>` lowercased a copy of the rest of the file
        // to find its end tag (7.5 TB copied for the first), and every `&` searched the rest
        // of the file for a `;`.
        assert_eq!(html_to_text(&"<style></style>".repeat(1_000_000)), "");
        assert_eq!(html_to_text(&"<SCRIPT>x</Script >".repeat(750_000)), "");
        let ampersands = "&".repeat(15_000_000);
        assert_eq!(html_to_text(&ampersands), ampersands);
        assert_eq!(html_to_text(&"&amp;<p>".repeat(1_000_000)).len(), 2_000_000 - 1);
    }

    #[test]
    fn failures_have_reasons() {
        assert_eq!(extract(Kind::Text, b"   \n"), Err(ExtractError::NoText));
        assert_eq!(extract(Kind::Markdown, b"\xff\xfa"), Err(ExtractError::NotUtf8));
        assert_eq!(extract(Kind::Markdown, b"\xff\xfe"), Err(ExtractError::NoText));
        assert_eq!(extract(Kind::Pdf, b"not a pdf"), Err(ExtractError::CorruptPdf));
        assert_eq!(extract(Kind::Pdf, b"%PDF-1.4 garbage"), Err(ExtractError::CorruptPdf));
        assert_eq!(extract(Kind::Text, b"\xEF\xBB\xBFhello").unwrap(), "hello");
    }

    #[test]
    fn utf16_with_a_byte_order_mark_is_text_and_nul_bytes_are_binary() {
        assert_eq!(extract(Kind::Text, b"\xFF\xFEH\x00i\x00 \x00\xac\x20").unwrap(), "Hi €");
        assert_eq!(extract(Kind::Markdown, b"\xFE\xFF\x00#\x00 \x00T").unwrap(), "# T");
        assert_eq!(extract(Kind::Text, b"\xFF\xFEH\x00i"), Err(ExtractError::NotUtf8), "odd length");
        assert_eq!(extract(Kind::Text, b"\xFF\xFE\x00\xD8a\x00"), Err(ExtractError::NotUtf8), "lone surrogate");
        // Found by the `extract` fuzz target: UTF-16 without a mark is valid UTF-8 full of NULs.
        assert_eq!(extract(Kind::Text, b"H\x00e\x00l\x00l\x00o\x00"), Err(ExtractError::NotUtf8));
        assert_eq!(extract(Kind::Html, b"<p>a\x00b</p>"), Err(ExtractError::NotUtf8));
    }

    #[test]
    fn csv_rows_become_paragraphs_naming_their_columns() {
        let csv = "\u{feff}Name,Role, Start date\nAda,Engineer,2024-01-02\n\"Lee, Sam\",\"Team \"\"lead\"\"\nof two\",\n,,\nZoe,Designer,2025-03-04,extra\n";
        let text = extract(Kind::Csv, csv.as_bytes()).unwrap();
        assert_eq!(
            text,
            "Name: Ada; Role: Engineer; Start date: 2024-01-02\n\n\
             Name: Lee, Sam; Role: Team \"lead\"\nof two\n\n\
             Name: Zoe; Role: Designer; Start date: 2025-03-04; extra"
        );
        assert_eq!(extract(Kind::Csv, b"only,a,header\n"), Err(ExtractError::NoText));
        assert_eq!(extract(Kind::Csv, b"a,b\n\xff\xfe\x00,1\n"), Err(ExtractError::NotUtf8));
        assert_eq!(Kind::from_filename("rows.CSV"), Some(Kind::Csv));
        assert_eq!(Kind::from_content_type("text/csv; charset=utf-8"), Some(Kind::Csv));
    }

    /// A .docx package holding `document` as `word/document.xml` (deflated, as Word writes it).
    fn docx(document: &str) -> Vec<u8> {
        use std::io::Write;
        let mut package = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let deflated = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        package.start_file("[Content_Types].xml", deflated).unwrap();
        package.write_all(b"<Types/>").unwrap();
        package.start_file("word/document.xml", deflated).unwrap();
        package.write_all(document.as_bytes()).unwrap();
        package.finish().unwrap().into_inner()
    }

    #[test]
    fn docx_paragraphs_runs_tabs_breaks_and_entities_are_read() {
        let body = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>
<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Parental leave</w:t></w:r></w:p>
<w:p><w:r><w:t xml:space="preserve">Sixteen weeks, </w:t></w:r><w:r><w:t>paid &amp; protected&#8217;s</w:t></w:r><w:r><w:tab/><w:t>tabbed</w:t><w:br/><w:t>next line</w:t></w:r></w:p>
<w:p></w:p>
<w:tbl><w:tr><w:tc><w:p><w:r><w:t>cell one</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>cell two</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
</w:body></w:document>"#;
        let text = extract(Kind::Docx, &docx(body)).unwrap();
        assert_eq!(
            text,
            "Parental leave\n\nSixteen weeks, paid & protected\u{2019}s\ttabbed\nnext line\n\ncell one\n\ncell two"
        );
        assert_eq!(Kind::from_filename("Policy.DOCX"), Some(Kind::Docx));
    }

    #[test]
    fn damaged_or_empty_docx_files_say_so() {
        let w = r#"<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>"#;
        // Not a zip (an encrypted document is an OLE container, not a zip).
        assert_eq!(extract(Kind::Docx, b"\xD0\xCF\x11\xE0 not a zip"), Err(ExtractError::CorruptDocx));
        // A zip without the document part.
        let mut package = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        package.start_file("other.xml", zip::write::SimpleFileOptions::default()).unwrap();
        let other = package.finish().unwrap().into_inner();
        assert_eq!(extract(Kind::Docx, &other), Err(ExtractError::CorruptDocx));
        // Broken XML, a truncated package, no text.
        let broken = docx(&format!("{w}<w:p><w:r><w:t>x</w:r></w:t></w:p></w:body></w:document>"));
        assert_eq!(extract(Kind::Docx, &broken), Err(ExtractError::CorruptDocx));
        let whole = docx(&format!("{w}<w:p><w:r><w:t>text</w:t></w:r></w:p></w:body></w:document>"));
        assert_eq!(extract(Kind::Docx, &whole[..whole.len() / 2]), Err(ExtractError::CorruptDocx));
        let nul = docx(&format!("{w}<w:p><w:r><w:t>a&#0;b\u{0}c&#7;d</w:t></w:r></w:p></w:body></w:document>"));
        assert_eq!(extract(Kind::Docx, &nul), Ok("abcd".to_owned()), "no control characters kept");
        let empty = docx(&format!("{w}<w:p></w:p></w:body></w:document>"));
        assert_eq!(extract(Kind::Docx, &empty), Err(ExtractError::NoText));
    }
}

#[cfg(test)]
mod pdf_fixture_tests {
    use super::*;

    #[test]
    fn password_protected_pdf_is_reported_as_encrypted() {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/encrypted.pdf")).unwrap();
        assert_eq!(extract(Kind::Pdf, &bytes), Err(ExtractError::EncryptedPdf));
    }

    #[test]
    fn a_pdf_that_panics_the_parser_is_reported_as_damaged() {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/panicking.pdf")).unwrap();
        let parser = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(&bytes));
        assert!(parser.is_err(), "the fixture should still make pdf-extract panic");
        assert_eq!(extract(Kind::Pdf, &bytes), Err(ExtractError::CorruptPdf));
    }

    #[test]
    fn a_pdf_without_text_says_it_needs_text_recognition() {
        // One blank page, as a scan without its text layer reads.
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/blank-page.pdf")).unwrap();
        let refused = extract(Kind::Pdf, &bytes).unwrap_err();
        assert_eq!(refused, ExtractError::NoTextInPdf);
        assert!(refused.to_string().contains("text recognition"));
        assert!(!ExtractError::NoText.to_string().contains("PDF"), "a text file is not told about PDFs");
    }

    #[test]
    fn a_page_that_is_its_own_parent_is_reported_as_damaged() {
        // pdf-extract alone never returns on this file (found by the `extract` fuzz target).
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cyclic-parent.pdf")).unwrap();
        let doc = pdf_extract::Document::load_mem(&bytes).unwrap();
        assert!(has_cyclic_parents(&doc));
        assert_eq!(extract(Kind::Pdf, &bytes), Err(ExtractError::CorruptPdf));
    }
}
