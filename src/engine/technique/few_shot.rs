//! Few-shot: the configured worked examples (`generator.examples`) come
//! before the sources.

use super::Technique;
use crate::config::GeneratorConfig;
use crate::prompt::Style;

/// Worked examples first.
pub struct FewShot;

impl super::sealed::Sealed for FewShot {}

impl Technique for FewShot {
    fn name(&self) -> &'static str {
        "few-shot"
    }

    fn about(&self) -> &'static str {
        "Few-shot: the configured worked examples before the sources."
    }

    fn prompt<'a>(&self, style: &mut Style<'a>, config: &'a GeneratorConfig) {
        style.examples = config.examples.as_slice();
    }
}
