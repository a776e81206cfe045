//! Checking a whole folder of workflow files: each file on its own, then what they share.

use super::*;
use crate::workflow::model::Workflow;
use crate::workflow::page::Page;
use std::path::{Path, PathBuf};

/// A workflow folder checked file by file: what its valid files declare, and every problem.
#[derive(Debug, Clone, Default)]
pub struct Folder {
    /// The workflows of the valid files.
    pub workflows: Vec<Workflow>,
    /// The landing pages of the valid files.
    pub pages: Vec<Page>,
    /// Every list declared by a file whose `lists:` is valid (even when the rest of it is not).
    pub lists: Vec<DeclaredList>,
    /// Every problem, each at `file:line:column`.
    pub diagnostics: Vec<Diagnostic>,
    /// Every file read, in order, with whether it was valid.
    pub files: Vec<FileState>,
}

/// One file of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub path: PathBuf,
    /// Its path inside the folder, with `/` (how stored pages name it).
    pub name: String,
    /// Its workflow id (the file name without `.yaml`), whether or not it declares a workflow.
    pub id: String,
    pub valid: bool,
}

impl Folder {
    /// The ids of the files with problems: their workflows keep the version last loaded.
    pub fn invalid_ids(&self) -> BTreeSet<String> {
        self.files.iter().filter(|f| !f.valid).map(|f| f.id.clone()).collect()
    }
}

/// Checks every `.yaml`/`.yml` file under `dir`. Lists declared in any file count as existing
/// for every file, beside `context.lists`.
pub fn check_dir(dir: &Path, context: &Context<'_>) -> Folder {
    let mut paths = Vec::new();
    collect_files(dir, &mut paths);
    paths.sort();
    let mut folder = Folder::default();
    let mut texts = Vec::new();
    for path in paths {
        let name = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for list in declared_lists(&path, &text, context) {
                    match folder.lists.iter().find(|d| d.list.slug == list.list.slug) {
                        Some(first) if first.list != list.list => {
                            let message = format!(
                                "list '{}' is also declared in {}:{} with other settings: declare it once",
                                list.list.slug,
                                first.file.display(),
                                first.line
                            );
                            folder.diagnostics.push(Diagnostic {
                                file: path.clone(),
                                line: list.line,
                                column: 1,
                                message,
                            });
                        }
                        Some(_) => {}
                        None => folder.lists.push(list),
                    }
                }
                texts.push((path, name, id, Ok(text)));
            }
            Err(e) => texts.push((path, name, id, Err(format!("cannot read the file: {e}")))),
        }
    }
    let mut known = context.lists.cloned().unwrap_or_default();
    known.extend(folder.lists.iter().map(|l| l.list.slug.clone()));
    let context = Context {
        templates: context.templates,
        lists: context.lists.map(|_| &known),
        sms_max_segments: context.sms_max_segments,
    };
    let at_top = |path: &PathBuf, message: String| Diagnostic { file: path.clone(), line: 1, column: 1, message };
    for (path, name, id, text) in texts {
        let mut problems: Vec<Diagnostic> = folder.diagnostics.iter().filter(|d| d.file == path).cloned().collect();
        let checked = match text {
            Err(message) => {
                problems.push(at_top(&path, message));
                None
            }
            Ok(text) => match check_file(&path, &text, &context) {
                Ok(checked) => Some(checked),
                Err(found) => {
                    problems.extend(found);
                    None
                }
            },
        };
        if let Some(checked) = &checked {
            if let Some(workflow) = &checked.workflow
                && folder.workflows.iter().any(|w| w.id == workflow.id)
            {
                let message = format!("another file is already named '{}': workflow ids must be unique", workflow.id);
                problems.push(at_top(&path, message));
            }
            for page in &checked.pages {
                if let Some(other) = folder.pages.iter().find(|p| p.slug == page.slug) {
                    let message =
                        format!("page '{}' is also declared in {}: page slugs must be unique", page.slug, other.file);
                    problems.push(at_top(&path, message));
                }
            }
        }
        let valid = problems.is_empty();
        if let (true, Some(checked)) = (valid, checked) {
            folder.workflows.extend(checked.workflow);
            folder.pages.extend(checked.pages);
        }
        folder.diagnostics.retain(|d| d.file != path);
        folder.diagnostics.extend(problems);
        folder.files.push(FileState { path, name, id, valid });
    }
    // A locale file that does not parse is left out (its language keeps the shipped words):
    // reported here, where a marketer looks, though no workflow file is the worse for it.
    for problem in context.templates.locale_problems() {
        if let crate::workflow::templates::Problem::At { file, line, column, message } = problem {
            let message = format!("these words are left out: {message}");
            folder.diagnostics.push(Diagnostic { file: file.clone(), line: *line, column: *column, message });
        }
    }
    if let Some(crate::workflow::templates::Problem::At { file, line, column, message }) =
        context.templates.machines_problem()
    {
        let message = format!("{message} (the shipped machines.toml is used instead)");
        folder.diagnostics.push(Diagnostic { file: file.clone(), line: *line, column: *column, message });
    }
    // Likewise a page template or the email layout that does not parse: the shipped one is used.
    for problem in context.templates.shared_problems() {
        if let crate::workflow::templates::Problem::At { file, line, column, message } = problem {
            let message = format!("{message} (the shipped template is used instead)");
            folder.diagnostics.push(Diagnostic { file, line, column, message });
        }
    }
    folder
}

pub(super) fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}
