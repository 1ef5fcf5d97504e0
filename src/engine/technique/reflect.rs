//! Reflection: a second pass shows the model its draft beside the sources
//! and asks it to keep the draft, revise it (the revision matches the
//! answer's constraint) or, for a text answer, abstain.

use super::{Draft, Reviewed, Technique, Verdict};
use crate::error::Result;
use crate::generate::Constraint;
use crate::prompt;

/// Check the draft against the sources.
pub struct Reflect;

impl super::sealed::Sealed for Reflect {}

impl Technique for Reflect {
    fn name(&self) -> &'static str {
        "reflect"
    }

    fn about(&self) -> &'static str {
        "Reflection: a second pass checks the draft against the sources and\n\
         keeps, revises or abstains."
    }

    fn passes(&self) -> usize {
        1
    }

    fn review(
        &self,
        draft: &Draft<'_>,
        go_on: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Reviewed>> {
        let messages = prompt::reflection(draft.question, draft.sources, draft.answer);
        let rendered = draft.generator.render(&messages);
        let abstain = if draft.text { " | \"ABSTAIN\"" } else { "" };
        let verdicts = Constraint::Grammar {
            lark: format!("start: \"KEEP\"{abstain} | \"REVISE: \" @answer\n"),
            answer: Some(Box::new(draft.constraint.clone())),
        };
        let generated =
            draft
                .generator
                .generate(&rendered, draft.sampling, Some(&verdicts), &mut |_| go_on())?;
        let text = generated.text.trim();
        let (verdict, revision) = match text.strip_prefix("REVISE:") {
            Some(revised) => (Verdict::Revise, Some(revised.to_string())),
            None if text == "ABSTAIN" => (Verdict::Abstain, None),
            None => (Verdict::Keep, None),
        };
        Ok(Some(Reviewed {
            verdict,
            revision,
            generated,
        }))
    }
}
