use salt::prelude::*;

mod checks {
    pub async fn source_exists(path: &String, width: &u32) -> salt::Result<()> {
        if path.is_empty() || *width == 0 {
            return Err(salt::Error::fatal("nothing to resize"));
        }
        Ok(())
    }
}

async fn output_fits(_path: &String, width: &u32, out: &Vec<u8>) -> salt::Result<()> {
    if out.len() > *width as usize {
        return Err("the output is too wide".into());
    }
    Ok(())
}

async fn clean_up(path: &String, _width: &u32, error: &salt::Error) -> salt::Result<()> {
    let _ = (path, error.kind());
    Ok(())
}

#[task(retries = 2, pre = checks::source_exists, post = output_fits, on_failure = clean_up)]
async fn resize(path: String, width: u32, ctx: &Context) -> salt::Result<Vec<u8>> {
    ctx.log(format!("resizing {path}"));
    Ok(vec![0; width as usize])
}

#[task(on_failure = self::nothing_to_undo)]
async fn unit() {}

async fn nothing_to_undo(_: &salt::Error) -> salt::Result<()> {
    Ok(())
}

fn main() {}
