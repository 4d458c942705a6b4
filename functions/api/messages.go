package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/basalt-storage/basalt"
	"github.com/danielgtaylor/huma/v2"
)

// MessageView is a user message.
type MessageView struct {
	ID              string    `json:"id"`
	EventID         string    `json:"event_id"`
	UserMessage     string    `json:"user_message"`
	MessageLevel    string    `json:"message_level"`
	CreatedAt       Timestamp `json:"created_at"`
	GuaranteedUntil Timestamp `json:"guaranteed_until"`
	RequestID       string    `json:"request_id"`
	ResourceType    string    `json:"resource_type,omitempty"`
	ResourceUUID    string    `json:"resource_uuid,omitempty"`
	Links           []Link    `json:"links"`
}

// MessageListOutput lists messages.
type MessageListOutput struct {
	Body struct {
		Messages []MessageView `json:"messages"`
		Links    []Link        `json:"messages_links,omitempty"`
	}
}

// MessageOutput is one message.
type MessageOutput struct {
	Body struct {
		Message MessageView `json:"message"`
	}
}

// MessageIDInput names a message.
type MessageIDInput struct {
	ID string `path:"message_id"`
}

// MessageListInput lists messages.
type MessageListInput struct {
	Marker string `query:"marker"`
	Limit  string `query:"limit"`
	raw    url.Values
	path   string
}

// Resolve keeps the raw query for filters and links.
func (in *MessageListInput) Resolve(ctx huma.Context) []error {
	u := ctx.URL()
	in.raw, in.path = u.Query(), u.Path
	return nil
}

func messageView(ctx context.Context, m *basalt.Message) MessageView {
	return MessageView{ID: m.ID, EventID: m.EventID, UserMessage: m.UserMessage, MessageLevel: m.Level,
		CreatedAt: ts(m.CreatedAt), GuaranteedUntil: ts(m.ExpiresAt), RequestID: m.RequestID,
		ResourceType: m.ResourceType, ResourceUUID: m.ResourceUUID, Links: selfLinks(ctx, "messages", m.ID)}
}

func requireVersion(ctx context.Context, minor int) error {
	if !info(ctx).version.AtLeast(minor) {
		return basalt.Errorf(basalt.ENOTFOUND, "The resource could not be found.")
	}
	return nil
}

func (s *Server) registerMessages() {
	tag := []string{"messages"}
	huma.Register(s.api, huma.Operation{OperationID: "list-messages", Method: http.MethodGet, Path: "/v3/messages",
		Summary: "List user messages (3.3+)", Tags: tag},
		func(ctx context.Context, in *MessageListInput) (*MessageListOutput, error) {
			if err := requireVersion(ctx, 3); err != nil {
				return nil, fault(err)
			}
			o, err := listOptions(ctx, in.raw)
			if err != nil {
				return nil, fault(err)
			}
			if !info(ctx).version.AtLeast(5) {
				o.Marker, o.Limit, o.Offset = "", 0, 0
			}
			msgs, more, err := s.plane.Messages(ctx, o)
			if err != nil {
				return nil, fault(err)
			}
			out := &MessageListOutput{}
			out.Body.Messages = make([]MessageView, 0, len(msgs))
			for _, m := range msgs {
				out.Body.Messages = append(out.Body.Messages, messageView(ctx, m))
			}
			if more {
				out.Body.Links = nextLink(ctx, in.path, in.raw, msgs[len(msgs)-1].ID)
			}
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "show-message", Method: http.MethodGet, Path: "/v3/messages/{message_id}",
		Summary: "Show a user message (3.3+)", Tags: tag},
		func(ctx context.Context, in *MessageIDInput) (*MessageOutput, error) {
			if err := requireVersion(ctx, 3); err != nil {
				return nil, fault(err)
			}
			m, err := s.plane.Message(ctx, in.ID)
			if err != nil {
				return nil, fault(err)
			}
			out := &MessageOutput{}
			out.Body.Message = messageView(ctx, m)
			return out, nil
		})
	huma.Register(s.api, huma.Operation{OperationID: "delete-message", Method: http.MethodDelete, Path: "/v3/messages/{message_id}",
		Summary: "Delete a user message (3.3+)", Tags: tag, DefaultStatus: http.StatusNoContent},
		func(ctx context.Context, in *MessageIDInput) (*struct{}, error) {
			if err := requireVersion(ctx, 3); err != nil {
				return nil, fault(err)
			}
			return nil, fault(s.plane.DeleteMessage(ctx, in.ID))
		})
}
