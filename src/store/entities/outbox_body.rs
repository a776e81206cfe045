use std::borrow::Cow;

use sea_orm::entity::prelude::*;

/// The bodies of an outbox message (written once with it, never changed).
///
/// The HTML is stored LZ4-compressed in `html_lz4` (migration m10); messages written before keep
/// it as text in `html`. Read it with [`Model::html`]. As JSON (exports, imports) a body is
/// `{outbox_id, html, text, links}` with the HTML as text, whichever way it is stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox_bodies")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub outbox_id: Uuid,
    /// The HTML as text: only messages written before bodies were compressed.
    pub html: Option<String>,
    /// The HTML, LZ4-compressed (block format, its length first).
    pub html_lz4: Option<Vec<u8>>,
    pub text: String,
    /// Where the message's click-tracking links lead, in order (a click names an index).
    pub links: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// A stored body that cannot be read back (its compressed HTML is damaged).
#[derive(Debug, thiserror::Error)]
#[error("the message's stored HTML is damaged: {0}")]
pub struct Damaged(String);

impl Model {
    /// A body as it is stored: the HTML compressed.
    pub fn new(outbox_id: Uuid, html: Option<&str>, text: String, links: Option<Json>) -> Self {
        let html_lz4 = html.map(|html| lz4_flex::block::compress_prepend_size(html.as_bytes()));
        Self { outbox_id, html: None, html_lz4, text, links }
    }

    /// The HTML part, if the message has one.
    pub fn html(&self) -> Result<Option<Cow<'_, str>>, Damaged> {
        let Some(packed) = &self.html_lz4 else { return Ok(self.html.as_deref().map(Cow::Borrowed)) };
        let bytes = lz4_flex::block::decompress_size_prepended(packed).map_err(|e| Damaged(e.to_string()))?;
        String::from_utf8(bytes).map(|html| Some(Cow::Owned(html))).map_err(|e| Damaged(e.to_string()))
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
        }
    }
}

/// A body as JSON: the HTML as text.
#[derive(serde::Serialize, serde::Deserialize)]
struct Readable<'a> {
    outbox_id: Uuid,
    html: Option<Cow<'a, str>>,
    text: Cow<'a, str>,
    #[serde(default)]
    links: Option<Json>,
}

impl serde::Serialize for Model {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let html = self.html().map_err(serde::ser::Error::custom)?;
        let readable =
            Readable { outbox_id: self.outbox_id, html, text: Cow::Borrowed(&self.text), links: self.links.clone() };
        readable.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Model {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let readable = Readable::deserialize(deserializer)?;
        Ok(Self::new(readable.outbox_id, readable.html.as_deref(), readable.text.into_owned(), readable.links))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_stored_compressed_and_read_back_whole() {
        let html = format!("<html><body>{}</body></html>", "<p>Hello Ada, café é 😀</p>\n".repeat(80));
        let body = Model::new(Uuid::now_v7(), Some(&html), String::new(), None);
        assert!(body.html.is_none());
        assert!(body.html_lz4.as_ref().unwrap().len() * 4 < html.len(), "repetitive HTML shrinks");
        assert_eq!(body.html().unwrap().as_deref(), Some(html.as_str()));
        assert_eq!(Model::new(Uuid::now_v7(), None, "text".into(), None).html().unwrap(), None);
    }

    #[test]
    fn bodies_written_before_compression_are_read_as_they_are() {
        let old = Model {
            outbox_id: Uuid::now_v7(),
            html: Some("<p>old</p>".into()),
            html_lz4: None,
            text: "t".into(),
            links: None,
        };
        assert_eq!(old.html().unwrap().as_deref(), Some("<p>old</p>"));
    }

    #[test]
    fn damaged_html_is_an_error_not_a_panic() {
        let mut body = Model::new(Uuid::now_v7(), Some("<p>hello hello hello hello</p>"), String::new(), None);
        body.html_lz4.as_mut().unwrap().truncate(6);
        assert!(body.html().is_err());
        body.html_lz4 = Some(vec![0xff; 3]);
        assert!(body.html().is_err());
    }

    #[test]
    fn as_json_the_html_is_text_and_comes_back_compressed() {
        let links = serde_json::json!(["https://shop.example/a"]);
        let body = Model::new(Uuid::now_v7(), Some("<p>x</p>"), "x".into(), Some(links.clone()));
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["html"], "<p>x</p>");
        assert_eq!(json["links"], links);
        assert!(json.get("html_lz4").is_none());
        let back: Model = serde_json::from_value(json).unwrap();
        assert_eq!(back, body);
        let old: Model =
            serde_json::from_str(&format!("{{\"outbox_id\":\"{}\",\"html\":null,\"text\":\"t\"}}", body.outbox_id))
                .unwrap();
        assert!(old.html().unwrap().is_none() && old.links.is_none());
    }
}
