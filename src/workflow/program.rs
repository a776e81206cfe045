//! A workflow as a graph of steps: for each step id, the step and where the enrollment goes next.
//! Enrollments store only a step id, so this is all the engine needs to move them on.

use std::collections::HashMap;

use super::model::{Action, Condition, Step, Workflow};

/// One step and its exits.
#[derive(Debug, Clone)]
pub struct Node {
    pub step: Step,
    /// Where to go when this step is done (the next sibling, or the continuation of the
    /// enclosing `if` / `wait_for`); `None` ends the workflow.
    pub next: Option<String>,
    /// For `if`: the first step of `then` and of `else` (the `next` step when a branch is empty).
    pub then_first: Option<String>,
    pub else_first: Option<String>,
    /// For `wait_for`: the first `on_timeout` step (or `next`).
    pub timeout_first: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Program {
    pub workflow: Workflow,
    pub version: i32,
    nodes: HashMap<String, Node>,
    first: Option<String>,
    needs: Needs,
}

/// Which of a subscriber's facts running this workflow's steps and goal may read, so the engine
/// loads only those for a batch (anything else is still loaded on demand, just one at a time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// The subscriber's row: addresses, channel states, time zone, attributes, attribution.
    pub subscriber: bool,
    pub tags: bool,
    pub lists: bool,
}

impl Needs {
    pub fn union(self, other: Needs) -> Needs {
        Needs {
            subscriber: self.subscriber || other.subscriber,
            tags: self.tags || other.tags,
            lists: self.lists || other.lists,
        }
    }

    fn of_condition(condition: &Condition) -> Needs {
        let none = Needs::default();
        match condition {
            Condition::Tag(_) => Needs { tags: true, ..none },
            Condition::List(_) => Needs { lists: true, ..none },
            Condition::Has(_)
            | Condition::Attribute { .. }
            | Condition::Source(_)
            | Condition::Medium(_)
            | Condition::Campaign(_) => Needs { subscriber: true, ..none },
            Condition::Opened(_) | Condition::Clicked(_) | Condition::Event { .. } => none,
            Condition::All(items) | Condition::Any(items) => {
                items.iter().map(Needs::of_condition).fold(none, Needs::union)
            }
            Condition::Not(inner) => Needs::of_condition(inner),
        }
    }

    fn of_action(action: &Action) -> Needs {
        let none = Needs::default();
        match action {
            Action::Email { .. }
            | Action::Sms { .. }
            | Action::WaitUntil(_)
            | Action::Set(_)
            | Action::Webhook { .. }
            | Action::AskChannel(_)
            | Action::Message(_) => Needs { subscriber: true, ..none },
            Action::Tag(_) | Action::Untag(_) => Needs { tags: true, ..none },
            Action::Join(_) | Action::Leave(_) => Needs { lists: true, ..none },
            Action::If { condition, .. } => Needs::of_condition(condition),
            Action::Wait(_) | Action::WaitFor { .. } | Action::Exit(_) => none,
        }
    }
}

impl Program {
    pub fn new(workflow: Workflow, version: i32) -> Self {
        let mut nodes = HashMap::new();
        let first = layout(&workflow.steps, None, &mut nodes);
        let goal = workflow.exit_when.as_ref().map(Needs::of_condition).unwrap_or_default();
        let needs = nodes.values().map(|n| Needs::of_action(&n.step.action)).fold(goal, Needs::union);
        Self { workflow, version, nodes, first, needs }
    }

    /// What advancing an enrollment in this workflow may read about its subscriber.
    pub fn needs(&self) -> Needs {
        self.needs
    }

    pub fn first(&self) -> Option<&str> {
        self.first.as_deref()
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.nodes.contains_key(id)
    }

    /// Where an enrollment at `step` (of this, an older version) goes in `newer`: the same step
    /// if it still exists, else the next step of this version's order that still exists, else
    /// nowhere (the enrollment completes).
    pub fn map_step_to(&self, step: &str, newer: &Program) -> Option<String> {
        let mut current = Some(step.to_owned());
        let mut guard = 0;
        while let Some(id) = current {
            if newer.contains(&id) {
                return Some(id);
            }
            guard += 1;
            if guard > self.nodes.len() {
                return None;
            }
            current = self.nodes.get(&id).and_then(|n| n.next.clone());
        }
        None
    }
}

/// Lays out `steps` whose continuation is `after`; returns the id of the first step (or `after`).
fn layout(steps: &[Step], after: Option<String>, nodes: &mut HashMap<String, Node>) -> Option<String> {
    let mut next = after;
    for step in steps.iter().rev() {
        let mut node =
            Node { step: step.clone(), next: next.clone(), then_first: None, else_first: None, timeout_first: None };
        match &step.action {
            Action::If { then, otherwise, .. } => {
                node.then_first = layout(then, next.clone(), nodes);
                node.else_first = layout(otherwise, next.clone(), nodes);
            }
            Action::WaitFor { on_timeout, .. } => {
                node.timeout_first = layout(on_timeout, next.clone(), nodes);
            }
            _ => {}
        }
        nodes.insert(step.id.clone(), node);
        next = Some(step.id.clone());
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::timing::Span;
    use crate::workflow::model::{Condition, Reentry, Trigger};

    fn step(id: &str, action: Action) -> Step {
        Step { id: id.into(), action }
    }

    fn tag(id: &str) -> Step {
        step(id, Action::Tag(id.into()))
    }

    fn workflow(steps: Vec<Step>) -> Workflow {
        Workflow {
            id: "w".into(),
            name: "w".into(),
            description: None,
            trigger: Trigger::Event { name: "x".into() },
            filter: None,
            exit_when: None,
            reentry: Reentry::Never,
            timezone: None,
            send_window: None,
            tracking: true,
            steps,
        }
    }

    #[test]
    fn branches_rejoin_after_their_step() {
        let program = Program::new(
            workflow(vec![
                tag("a"),
                step(
                    "if",
                    Action::If {
                        condition: Condition::Tag("x".into()),
                        then: vec![tag("t1"), tag("t2")],
                        otherwise: vec![],
                    },
                ),
                step(
                    "wait",
                    Action::WaitFor {
                        event: "e".into(),
                        timeout: Span::parse("1d", false).unwrap(),
                        on_timeout: vec![tag("late")],
                    },
                ),
                tag("z"),
            ]),
            1,
        );
        assert_eq!(program.first(), Some("a"));
        assert_eq!(program.node("a").unwrap().next.as_deref(), Some("if"));
        let branch = program.node("if").unwrap();
        assert_eq!(branch.then_first.as_deref(), Some("t1"));
        assert_eq!(branch.else_first.as_deref(), Some("wait"), "an empty branch goes straight on");
        assert_eq!(program.node("t2").unwrap().next.as_deref(), Some("wait"));
        assert_eq!(program.node("wait").unwrap().timeout_first.as_deref(), Some("late"));
        assert_eq!(program.node("late").unwrap().next.as_deref(), Some("z"));
        assert_eq!(program.node("z").unwrap().next, None);
    }

    #[test]
    fn needs_cover_every_step_and_the_goal() {
        let wait = step("w", Action::Wait(Span::parse("1d", false).unwrap()));
        let plain = Program::new(workflow(vec![tag("a"), wait.clone()]), 1);
        assert_eq!(plain.needs(), Needs { tags: true, ..Needs::default() });
        let nested = Program::new(
            workflow(vec![
                wait.clone(),
                step(
                    "if",
                    Action::If {
                        condition: Condition::Not(Box::new(Condition::List("l".into()))),
                        then: vec![step("join", Action::Join("m".into()))],
                        otherwise: vec![step("set", Action::Set(Default::default()))],
                    },
                ),
            ]),
            1,
        );
        assert_eq!(nested.needs(), Needs { subscriber: true, lists: true, tags: false });
        let mut with_goal = workflow(vec![wait]);
        with_goal.exit_when = Some(Condition::Any(vec![Condition::Source("x".into()), Condition::Tag("t".into())]));
        assert_eq!(Program::new(with_goal, 1).needs(), Needs { subscriber: true, tags: true, lists: false });
    }

    #[test]
    fn a_removed_step_maps_to_the_next_surviving_one() {
        let old = Program::new(workflow(vec![tag("a"), tag("b"), tag("c")]), 1);
        let new = Program::new(workflow(vec![tag("a"), tag("c"), tag("d")]), 2);
        assert_eq!(old.map_step_to("a", &new).as_deref(), Some("a"));
        assert_eq!(old.map_step_to("b", &new).as_deref(), Some("c"));
        let shorter = Program::new(workflow(vec![tag("a")]), 3);
        assert_eq!(old.map_step_to("b", &shorter), None);
    }
}
