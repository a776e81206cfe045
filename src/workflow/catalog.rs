//! What the loaded workflow folder says, in force now: its templates, the landing pages its files
//! declare, and the problems its last load found. The engine renders from it, the public pages
//! serve from it, and a load of the folder replaces it.

use std::sync::{Arc, PoisonError, RwLock};

use super::loader::{FileProblem, Load, Reloaded};
use super::page::{Page, Pages};
use super::templates::TemplateChecker;

#[derive(Debug)]
pub struct Catalog {
    templates: RwLock<Arc<TemplateChecker>>,
    pages: Pages,
    /// The problems the last load of the workflow folder found (none: every file is valid).
    problems: RwLock<Vec<FileProblem>>,
}

impl Catalog {
    /// A catalog of these templates, with no landing page and no problem yet.
    pub fn new(templates: Arc<TemplateChecker>) -> Self {
        Self { templates: RwLock::new(templates), pages: Pages::default(), problems: RwLock::new(Vec::new()) }
    }

    /// The templates in force.
    pub fn templates(&self) -> Arc<TemplateChecker> {
        self.templates.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Uses these templates from now on.
    pub fn set_templates(&self, templates: Arc<TemplateChecker>) {
        *self.templates.write().unwrap_or_else(PoisonError::into_inner) = templates;
    }

    /// The landing pages in force.
    pub fn pages(&self) -> &Pages {
        &self.pages
    }

    /// Serves these landing pages from now on.
    pub fn set_pages(&self, pages: Vec<Page>) {
        self.pages.set(pages);
    }

    /// Takes what a load of the workflow folder produced: its templates, pages and problems.
    pub fn take_load(&self, load: Load) -> Reloaded {
        self.set_templates(load.templates);
        self.set_pages(load.pages);
        *self.problems.write().unwrap_or_else(PoisonError::into_inner) = load.reloaded.problems.clone();
        load.reloaded
    }

    /// The problems the last load of the workflow folder found.
    pub fn problems(&self) -> Vec<FileProblem> {
        self.problems.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
