package hostreg

import "testing"

func TestCredentialChecks(t *testing.T) {
	tok := NewToken()
	if len(tok) != 64 || NewToken() == tok {
		t.Fatalf("tokens are not random 32-byte hex: %q", tok)
	}
	h := HashToken(tok)
	for _, c := range []struct {
		tok  string
		want bool
	}{{tok, true}, {"", false}, {tok[:63], false}, {h, false}} {
		if got := TokenMatches(h, c.tok); got != c.want {
			t.Errorf("TokenMatches(%q) = %v, want %v", c.tok, got, c.want)
		}
	}
	if TokenMatches("", "") {
		t.Error("an empty token matched an empty hash")
	}
	for _, c := range []struct {
		header, token string
		want          bool
	}{{"Bearer s", "s", true}, {"Bearer ", "", false}, {"", "", false}, {"bearer s", "s", false}, {"Bearer s2", "s", false}} {
		if got := BearerMatches(c.header, c.token); got != c.want {
			t.Errorf("BearerMatches(%q, %q) = %v, want %v", c.header, c.token, got, c.want)
		}
	}
	if Proof("a", "h", "n") == Proof("b", "h", "n") || Proof("a", "h", "n") == Proof("a", "h2", "n") || Proof("a", "h", "n") == Proof("a", "h", "n2") {
		t.Error("the proof does not depend on token, host and nonce")
	}
	for id, ok := range map[string]bool{"host1": true, "a.b_c-d": true, "": false, "-a": false, "a/b": false, "a b": false} {
		if ValidHostID(id) != ok {
			t.Errorf("ValidHostID(%q) = %v", id, !ok)
		}
	}
}
