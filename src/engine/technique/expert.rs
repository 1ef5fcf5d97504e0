//! The expert prompt: a system prompt that tells the model it is a
//! careful expert.

use super::Technique;
use crate::config::GeneratorConfig;
use crate::prompt::Style;

/// The expert system prompt.
pub struct Expert;

impl super::sealed::Sealed for Expert {}

impl Technique for Expert {
    fn name(&self) -> &'static str {
        "expert"
    }

    fn about(&self) -> &'static str {
        "The system prompt that tells the model it is a careful expert."
    }

    fn prompt<'a>(&self, style: &mut Style<'a>, _config: &'a GeneratorConfig) {
        style.expert = true;
    }
}
