//! The `outbox_bodies` table: a message's bodies, written once.

use std::borrow::Cow;

use sea_orm::entity::prelude::*;

pub use super::outbox_dictionary::Model as Dictionary;

/// The bodies of an outbox message (written once with it, never changed).
///
/// The HTML is stored LZ4-compressed in `html_lz4` (migration m10), alone or against a
/// [`Dictionary`] (`dictionary_id`, migration m11: a broadcast's messages are stored as what
/// differs from its template rendered for a sample subscriber); messages written before m10 keep
/// it as text in `html`. A body with a dictionary and no `links` of its own has the
/// dictionary's. Read them with [`Model::html`] and [`Model::links`], given the dictionary. As
/// JSON (exports, imports) a body is [`Readable`]: `{outbox_id, html, text, links}` with the
/// HTML as text, whichever way it is stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox_bodies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub outbox_id: Uuid,
    /// The HTML as text: only messages written before bodies were compressed.
    pub html: Option<String>,
    /// The HTML, LZ4-compressed (block format, its length first), against the dictionary's HTML
    /// when there is one.
    pub html_lz4: Option<Vec<u8>>,
    pub text: String,
    /// Where the message's click-tracking links lead, in order (a click names an index); none
    /// stored when they are the dictionary's.
    pub links: Option<Json>,
    /// The dictionary `html_lz4` was compressed against, and whose links are the message's when
    /// it stores none.
    pub dictionary_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A stored body that cannot be read back (its compressed HTML is damaged, or its dictionary
/// was not given).
#[derive(Debug, thiserror::Error)]
#[error("the message's stored HTML is damaged: {0}")]
pub struct Damaged(String);

impl Model {
    /// The bodies from the next columns of a row, in the order of the fields, after a left
    /// join: `None` (its columns skipped) when the row has none.
    pub(crate) fn read_joined(columns: &mut crate::store::Positional<'_>) -> Result<Option<Self>, DbErr> {
        let Some(outbox_id) = columns.take::<Option<Uuid>>()? else {
            columns.skip(<Column as sea_orm::Iterable>::iter().count() - 1);
            return Ok(None);
        };
        Ok(Some(Self {
            outbox_id,
            html: columns.take()?,
            html_lz4: columns.take()?,
            text: columns.take()?,
            links: columns.take()?,
            dictionary_id: columns.take()?,
        }))
    }

    /// A body as it is stored: the HTML compressed, against `dictionary` when one is given (then
    /// links the same as the dictionary's are not stored again).
    pub fn new(
        outbox_id: Uuid,
        html: Option<&str>,
        text: String,
        links: Option<Json>,
        dictionary: Option<&Dictionary>,
    ) -> Self {
        let dictionary = dictionary.filter(|_| html.is_some());
        let html_lz4 = html.map(|html| match dictionary {
            Some(dictionary) => {
                lz4_flex::block::compress_prepend_size_with_dict(html.as_bytes(), dictionary.html.as_bytes())
            }
            None => lz4_flex::block::compress_prepend_size(html.as_bytes()),
        });
        let links = match dictionary {
            Some(dictionary) if links == dictionary.links => None,
            _ => links,
        };
        Self { outbox_id, html: None, html_lz4, text, links, dictionary_id: dictionary.map(|d| d.id) }
    }

    /// The dictionary given, if it is this body's (an error if the body has one and it is not).
    fn own<'a>(&self, dictionary: Option<&'a Dictionary>) -> Result<Option<&'a Dictionary>, Damaged> {
        match (self.dictionary_id, dictionary) {
            (None, _) => Ok(None),
            (Some(id), Some(dictionary)) if dictionary.id == id => Ok(Some(dictionary)),
            (Some(id), _) => Err(Damaged(format!("its dictionary {id} was not found"))),
        }
    }

    /// Whether the message has an HTML part.
    pub fn has_html(&self) -> bool {
        self.html_lz4.is_some() || self.html.is_some()
    }

    /// How long the HTML part is, in bytes (0 without one), read without decompressing it.
    pub fn html_len(&self) -> usize {
        match (&self.html_lz4, &self.html) {
            (Some(packed), _) => packed.get(..4).map_or(0, |n| u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize),
            (None, Some(html)) => html.len(),
            (None, None) => 0,
        }
    }

    /// The HTML part, if the message has one; `dictionary` is the body's (see
    /// [`Self::dictionary_id`]), needed when it has one.
    pub fn html(&self, dictionary: Option<&Dictionary>) -> Result<Option<Cow<'_, str>>, Damaged> {
        let Some(packed) = &self.html_lz4 else { return Ok(self.html.as_deref().map(Cow::Borrowed)) };
        let bytes = match self.own(dictionary)? {
            Some(dictionary) => {
                lz4_flex::block::decompress_size_prepended_with_dict(packed, dictionary.html.as_bytes())
            }
            None => lz4_flex::block::decompress_size_prepended(packed),
        }
        .map_err(|e| Damaged(e.to_string()))?;
        String::from_utf8(bytes).map(|html| Some(Cow::Owned(html))).map_err(|e| Damaged(e.to_string()))
    }

    /// Where the message's click-tracking links lead (a JSON array of URLs), if it has any.
    pub fn links<'a>(&'a self, dictionary: Option<&'a Dictionary>) -> Result<Option<&'a Json>, Damaged> {
        match (&self.links, self.own(dictionary)?) {
            (Some(links), _) => Ok(Some(links)),
            (None, Some(dictionary)) => Ok(dictionary.links.as_ref()),
            (None, None) => Ok(None),
        }
    }

    /// The body as exports write it: the HTML as text and the links spelled out.
    pub fn readable(&self, dictionary: Option<&Dictionary>) -> Result<Readable<'_>, Damaged> {
        Ok(Readable {
            outbox_id: self.outbox_id,
            html: self.html(dictionary)?,
            text: Cow::Borrowed(&self.text),
            links: self.links(dictionary)?.cloned(),
        })
    }

    /// The rows to insert for it (every column set).
    pub fn into_row(self) -> ActiveModel {
        use sea_orm::ActiveValue::Set;
        ActiveModel {
            outbox_id: Set(self.outbox_id),
            html: Set(self.html),
            html_lz4: Set(self.html_lz4),
            text: Set(self.text),
            links: Set(self.links),
            dictionary_id: Set(self.dictionary_id),
        }
    }
}

/// A body as JSON: the HTML as text (an import stores it compressed again, on its own).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Readable<'a> {
    pub outbox_id: Uuid,
    pub html: Option<Cow<'a, str>>,
    pub text: Cow<'a, str>,
    #[serde(default)]
    pub links: Option<Json>,
}

impl<'de> serde::Deserialize<'de> for Model {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let readable = Readable::deserialize(deserializer)?;
        Ok(Self::new(readable.outbox_id, readable.html.as_deref(), readable.text.into_owned(), readable.links, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dictionary(html: &str, links: Option<Json>) -> Dictionary {
        Dictionary { id: Uuid::now_v7(), html: html.into(), links, created_at: chrono::Utc::now() }
    }

    #[test]
    fn html_is_stored_compressed_and_read_back_whole() {
        let html = format!("<html><body>{}</body></html>", "<p>Hello Ada, café é 😀</p>\n".repeat(80));
        let body = Model::new(Uuid::now_v7(), Some(&html), String::new(), None, None);
        assert!(body.html.is_none() && body.dictionary_id.is_none());
        assert!(body.html_lz4.as_ref().unwrap().len() * 4 < html.len(), "repetitive HTML shrinks");
        assert_eq!(body.html(None).unwrap().as_deref(), Some(html.as_str()));
        assert_eq!(body.html_len(), html.len());
        assert_eq!(Model::new(Uuid::now_v7(), None, "text".into(), None, None).html(None).unwrap(), None);
    }

    #[test]
    fn against_a_dictionary_only_what_differs_is_stored_and_shared_links_once() {
        let page = |name: &str| {
            let paragraphs: String = (1..=7)
                .map(|i| format!("<p>Paragraph {i} for {name}: our spring collection is in, in new colours.</p>\n"))
                .collect();
            format!("<html><body><h1>Hello {name},</h1>{paragraphs}</body></html>")
        };
        let links = Some(serde_json::json!(["https://shop.example/a", "https://shop.example/b"]));
        let reference = dictionary(&page("Sample"), links.clone());
        let html = page("Ada");
        let alone = Model::new(Uuid::now_v7(), Some(&html), String::new(), links.clone(), None);
        let body = Model::new(Uuid::now_v7(), Some(&html), String::new(), links.clone(), Some(&reference));
        assert_eq!(body.dictionary_id, Some(reference.id));
        assert!(
            body.html_lz4.as_ref().unwrap().len() * 2 < alone.html_lz4.as_ref().unwrap().len(),
            "{} against {}",
            body.html_lz4.as_ref().unwrap().len(),
            alone.html_lz4.as_ref().unwrap().len()
        );
        assert_eq!(body.html(Some(&reference)).unwrap().as_deref(), Some(html.as_str()));
        assert!(body.links.is_none(), "the same links as the dictionary's are not stored again");
        assert_eq!(body.links(Some(&reference)).unwrap(), links.as_ref());
        let own = Some(serde_json::json!(["https://shop.example/ada"]));
        let personal = Model::new(Uuid::now_v7(), Some(&html), String::new(), own.clone(), Some(&reference));
        assert_eq!(personal.links(Some(&reference)).unwrap(), own.as_ref(), "links of its own are kept");
        // Without its dictionary (or with another) a body cannot be read: an error, not a panic.
        assert!(body.html(None).is_err() && body.links(None).is_err());
        assert!(body.html(Some(&dictionary(&page("Sample"), None))).is_err());
        // A body without HTML has no use for a dictionary.
        let text = Model::new(Uuid::now_v7(), None, "Hi".into(), None, Some(&reference));
        assert!(text.dictionary_id.is_none() && text.html(None).unwrap().is_none());
    }

    #[test]
    fn bodies_written_before_compression_are_read_as_they_are() {
        let old = Model {
            outbox_id: Uuid::now_v7(),
            html: Some("<p>old</p>".into()),
            html_lz4: None,
            text: "t".into(),
            links: None,
            dictionary_id: None,
        };
        assert_eq!(old.html(None).unwrap().as_deref(), Some("<p>old</p>"));
    }

    #[test]
    fn damaged_html_is_an_error_not_a_panic() {
        let mut body = Model::new(Uuid::now_v7(), Some("<p>hello hello hello hello</p>"), String::new(), None, None);
        body.html_lz4.as_mut().unwrap().truncate(6);
        assert!(body.html(None).is_err());
        body.html_lz4 = Some(vec![0xff; 3]);
        assert!(body.html(None).is_err());
    }

    #[test]
    fn as_json_the_html_is_text_and_comes_back_compressed_alone() {
        let links = serde_json::json!(["https://shop.example/a"]);
        let reference = dictionary("<p>sample</p>", Some(links.clone()));
        let body = Model::new(Uuid::now_v7(), Some("<p>x</p>"), "x".into(), Some(links.clone()), Some(&reference));
        let json = serde_json::to_value(body.readable(Some(&reference)).unwrap()).unwrap();
        assert_eq!(json["html"], "<p>x</p>");
        assert_eq!(json["links"], links);
        assert!(json.get("html_lz4").is_none() && json.get("dictionary_id").is_none());
        let back: Model = serde_json::from_value(json).unwrap();
        assert_eq!(back, Model::new(body.outbox_id, Some("<p>x</p>"), "x".into(), Some(links), None));
        let old: Model =
            serde_json::from_str(&format!("{{\"outbox_id\":\"{}\",\"html\":null,\"text\":\"t\"}}", body.outbox_id))
                .unwrap();
        assert!(old.html(None).unwrap().is_none() && old.links.is_none());
    }
}
