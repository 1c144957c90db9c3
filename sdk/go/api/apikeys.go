package api

import "time"

// TeamAPIKey is an API key as GET /api-keys lists it: never the key itself.
type TeamAPIKey struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Mask      string     `json:"mask"`
	CreatedAt time.Time  `json:"createdAt"`
	LastUsed  *time.Time `json:"lastUsed"`
}

// CreatedTeamAPIKey is the answer to POST /api-keys, the only time the key is shown.
type CreatedTeamAPIKey struct {
	TeamAPIKey
	Key string `json:"key"`
}

// NewTeamAPIKey is the body of POST /api-keys.
type NewTeamAPIKey struct {
	Name string `json:"name"`
}
