//! The status LED: one `embedded-hal` output pin, on or off. The blink timing (steady when
//! active, 1 s on / 2 s off when passive) belongs to the firmware's LED task.

use embedded_hal::digital::OutputPin;

/// The status LED on an output pin (high = lit).
#[derive(Debug)]
pub struct StatusLed<P> {
    pin: P,
    lit: bool,
}

impl<P: OutputPin> StatusLed<P> {
    /// Wraps `pin` and turns the LED off.
    pub fn new(mut pin: P) -> Result<Self, P::Error> {
        pin.set_low()?;
        Ok(Self { pin, lit: false })
    }

    /// Lights the LED (`true`) or turns it off.
    pub fn set(&mut self, lit: bool) -> Result<(), P::Error> {
        if lit {
            self.pin.set_high()?;
        } else {
            self.pin.set_low()?;
        }
        self.lit = lit;
        Ok(())
    }

    /// Whether the LED was last set lit.
    pub fn is_lit(&self) -> bool {
        self.lit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::convert::Infallible;

    struct Pin<'a>(&'a mut bool);
    impl embedded_hal::digital::ErrorType for Pin<'_> {
        type Error = Infallible;
    }
    impl OutputPin for Pin<'_> {
        fn set_low(&mut self) -> Result<(), Infallible> {
            *self.0 = false;
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            *self.0 = true;
            Ok(())
        }
    }

    #[test]
    fn drives_the_pin() {
        let mut level = true;
        let mut led = StatusLed::new(Pin(&mut level)).expect("infallible");
        assert!(!led.is_lit());
        led.set(true).expect("infallible");
        assert!(led.is_lit());
        led.set(false).expect("infallible");
        assert!(!led.is_lit());
        let StatusLed { pin, .. } = led;
        assert!(!*pin.0);
    }
}
