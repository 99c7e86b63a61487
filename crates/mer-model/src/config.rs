//! Model configuration: which variant, how many input channels.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Side length of the network input (the head expects 8 x 7 x 7 features).
pub const INPUT_SIZE: usize = 112;

/// Class names by index: negative 0, positive 1, surprise 2.
pub const CLASS_NAMES: [&str; 3] = ["negative", "positive", "surprise"];

/// The architecture variants of the paper's ablations (Tables 3 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Variant {
    /// Last block a plain residual block (no enhancement).
    Res,
    /// Last block with channel and spatial attention (CBAM), no self-attention.
    Cbam,
    /// Last block with multi-head self-attention only (4 heads of 2 channels, no second conv).
    Sa,
    /// Last block a bottleneck transformer: two stacked MHSA, no convolutions in the main path.
    Bot,
    /// Off-TANet: last block with the triplet attention (CA, SpA, MHSA).
    #[default]
    Ta,
    /// Every residual block replaced by a triplet-attention block (Table 3).
    AllTa,
}

impl Variant {
    /// All variants, in the order of the ablation tables.
    pub const ALL: [Variant; 6] = [
        Variant::Res,
        Variant::Cbam,
        Variant::Sa,
        Variant::Bot,
        Variant::Ta,
        Variant::AllTa,
    ];

    /// The command-line name (`res`, `cbam`, `sa`, `bot`, `ta`, `all-ta`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Res => "res",
            Variant::Cbam => "cbam",
            Variant::Sa => "sa",
            Variant::Bot => "bot",
            Variant::Ta => "ta",
            Variant::AllTa => "all-ta",
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "res" => Ok(Variant::Res),
            "cbam" => Ok(Variant::Cbam),
            "sa" => Ok(Variant::Sa),
            "bot" => Ok(Variant::Bot),
            "ta" => Ok(Variant::Ta),
            "all-ta" | "all_ta" | "allta" => Ok(Variant::AllTa),
            _ => Err(Error::UnknownVariant(s.to_string())),
        }
    }
}

/// What network to build.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelConfig {
    /// The architecture variant.
    pub variant: Variant,
    /// Input channels: 3 for [u, v, strain], 2 for the no-strain and raw-image ablations.
    /// Only the stem convolution changes.
    pub in_channels: usize,
    /// Output classes (3).
    pub num_classes: usize,
    /// Dropout probability of the two hidden dense layers in training mode (0.5).
    pub dropout: f32,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            variant: Variant::Ta,
            in_channels: 3,
            num_classes: 3,
            dropout: 0.5,
        }
    }
}

impl ModelConfig {
    /// The reference configuration of `variant`: 3 input channels, 3 classes, dropout 0.5.
    pub fn new(variant: Variant) -> Self {
        Self {
            variant,
            ..Self::default()
        }
    }

    /// The same configuration with `in_channels` input channels.
    pub fn with_in_channels(mut self, in_channels: usize) -> Self {
        self.in_channels = in_channels;
        self
    }

    /// The same configuration with dropout probability `p`.
    pub fn with_dropout(mut self, p: f32) -> Self {
        self.dropout = p;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.in_channels == 0 {
            return Err(Error::Config(
                "in_channels: expected at least 1, found 0".into(),
            ));
        }
        if self.num_classes == 0 {
            return Err(Error::Config(
                "num_classes: expected at least 1, found 0".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!(
                "dropout: expected a probability in [0, 1), found {}",
                self.dropout
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_round_trip() {
        for v in Variant::ALL {
            assert_eq!(v.name().parse::<Variant>().unwrap(), v);
        }
        let err = "xyz".parse::<Variant>().unwrap_err().to_string();
        assert!(
            err.contains("`xyz`") && err.contains("expected one of"),
            "{err}"
        );
    }

    #[test]
    fn invalid_configs_are_rejected() {
        for (cfg, needle) in [
            (ModelConfig::default().with_in_channels(0), "in_channels"),
            (ModelConfig::default().with_dropout(1.0), "dropout"),
        ] {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
