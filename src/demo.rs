pub fn run() -> Result<u8, crate::app::Failure> {
    Ok(0)
}
