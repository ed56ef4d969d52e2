use crate::Error;

/// A freshly generated NATS user NKey: give [`public_key`](Self::public_key) to the server
/// ([`Auth::NKey`](crate::Auth::NKey)) and [`seed`](Self::seed) to the client.
#[derive(Clone, Debug)]
pub struct NKeyUser {
    public_key: String,
    seed: String,
}

impl NKeyUser {
    /// Generates a new user key pair.
    pub fn generate() -> Result<NKeyUser, Error> {
        let kp = nkeys::KeyPair::new_user();
        let seed = kp.seed().map_err(|e| Error::NKey(e.to_string()))?;
        Ok(NKeyUser {
            public_key: kp.public_key(),
            seed,
        })
    }

    /// The public key (`U...`), for the server configuration.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The seed (`SU...`), for client authentication.
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// Signs a server nonce the way NATS clients do (Ed25519, base64url without padding).
    pub fn sign_nonce(&self, nonce: &str) -> Result<String, Error> {
        sign_nonce(&self.seed, nonce)
    }
}

/// Signs `nonce` with the NKey `seed`, returning the base64url (no padding) signature.
pub(crate) fn sign_nonce(seed: &str, nonce: &str) -> Result<String, Error> {
    let kp = nkeys::KeyPair::from_seed(seed).map_err(|e| Error::NKey(e.to_string()))?;
    let sig = kp
        .sign(nonce.as_bytes())
        .map_err(|e| Error::NKey(e.to_string()))?;
    Ok(data_encoding::BASE64URL_NOPAD.encode(&sig))
}
