package proxy

import (
	"net/url"
	"path"
	"strings"
)

// internalEnvdPaths are envd routes only the agent may call, in the form envd's router
// matches them: decoded and cleaned.
var internalEnvdPaths = map[string]bool{"/init": true, "/freeze": true, "/thaw": true}

// maxUnescapes bounds how often a path is percent-decoded looking for an internal route.
const maxUnescapes = 4

// internalEnvdRoute reports whether route would reach one of envd's internal routes. The
// proxy forwards the path as the client escaped it, and envd's router decodes it (so
// "/%66reeze" is "/freeze") and redirects unclean forms ("//init", "/./thaw", "/a/../init")
// to their clean path, so the decision is made on the decoded, cleaned path, compared
// without regard to case. It decodes more than once (a server behind envd might decode
// again), and treats a path it cannot decode as internal: envd refuses such a path anyway.
func internalEnvdRoute(route Route) bool {
	if route.Port != EnvdPort {
		return false
	}
	p := route.Path
	for i := 0; ; i++ {
		if internalEnvdPaths[strings.ToLower(path.Clean("/"+p))] {
			return true
		}
		if !strings.Contains(p, "%") {
			return false
		}
		if i == maxUnescapes {
			return true // still escaped after every decode: nothing envd serves
		}
		u, err := url.PathUnescape(p)
		if err != nil {
			return true
		}
		p = u
	}
}
